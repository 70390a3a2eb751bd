"""Serving a trained run: the fast inference model (folded batch norm, channels-last) and ONNX export."""
