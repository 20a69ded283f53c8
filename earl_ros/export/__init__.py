"""Mask-decoder export: ONNX (prompt encoder + mask decoder), onnxruntime and TensorRT runners, parity.

Nothing here is imported by the torch inference path; tensorrt is imported lazily, only when asked for.
See docs/export.md.
"""
from .onnx_export import DEFAULT_OPSET, export_decoder_onnx  # noqa: F401
from .parity import export_and_check  # noqa: F401

__all__ = ["export_decoder_onnx", "export_and_check", "DEFAULT_OPSET"]
