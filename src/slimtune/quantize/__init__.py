"""Quantization: post-training dynamic int8 executed by ONNX Runtime."""

from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx, resolve_reduce_range

__all__ = ["OrtDynamicInt8Config", "quantize_dynamic_onnx", "resolve_reduce_range"]
