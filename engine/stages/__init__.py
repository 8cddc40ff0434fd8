"""The stages one frame flows through, in order: source -> detect -> track -> identify -> anonymize -> sink.

Each is a small module with one per-frame method; `engine/pipeline.py` runs a frame through them and owns
the fail-closed rules, `engine/runner.py` is the frame loop. One face record (`engine/faces.py`) flows
between them.
"""
