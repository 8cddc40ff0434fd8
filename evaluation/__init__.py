"""Evaluators (not needed to run the engine): privacy of an anonymized video against ground truth (`video`)
and face recognition on labelled photos or LFW pairs (`recognition`)."""
