"""Deployment: export a trained run to ONNX or TorchScript, checked in the serving runtime (`deploy/export.py`)."""
