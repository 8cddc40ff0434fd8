"""The GPU engine: the pipeline's stages on a torch device, the frame kept there (see `device.py`).

`build_pipeline` gives an ordinary `Pipeline` (same fail-closed rules) whose detector, recognizer input and
anonymizer work on the device. On a machine without CUDA the same code runs on the CPU (how it is tested);
the CPU default stays the onnxruntime / OpenVINO pipeline (engine/models/backends.py).
"""
