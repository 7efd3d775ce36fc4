"""Quantization: int8 executed by ONNX Runtime (dynamic and calibrated static), one verb for both."""

from slimtune.quantize.api import QUANTIZERS, quantize_onnx, register_quantizer
from slimtune.quantize.ort_auto import OrtAutoInt8Config, quantize_auto_onnx
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx, resolve_reduce_range
from slimtune.quantize.ort_static import OrtStaticInt8Config, quantize_static_onnx

__all__ = [
    "QUANTIZERS",
    "OrtAutoInt8Config",
    "OrtDynamicInt8Config",
    "OrtStaticInt8Config",
    "quantize_auto_onnx",
    "quantize_dynamic_onnx",
    "quantize_onnx",
    "quantize_static_onnx",
    "register_quantizer",
    "resolve_reduce_range",
]
