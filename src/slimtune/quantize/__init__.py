"""Quantization: k-bit affine fake-quant and calibration observers for simulation; int8 executed by
ONNX Runtime (dynamic, calibrated static, or chosen by measurement) through one verb."""

from slimtune.quantize.affine import FakeQuantize, QuantSpec, compute_qparams, fake_quantize
from slimtune.quantize.api import QUANTIZERS, quantize_onnx, register_quantizer
from slimtune.quantize.calibration import CalibrationDataset, QuantizedLayer, calibrate, fake_quants, quantize_layers
from slimtune.quantize.observers import OBSERVERS, Observer, make_observer
from slimtune.quantize.ort_auto import OrtAutoInt8Config, quantize_auto_onnx
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx, resolve_reduce_range
from slimtune.quantize.ort_static import OrtStaticInt8Config, quantize_static_onnx
from slimtune.quantize.sensitivity import (
    LayerSensitivity,
    format_sensitivity,
    layer_sensitivity,
    mixed_precision_plan,
    sqnr,
)

__all__ = [
    "OBSERVERS",
    "QUANTIZERS",
    "CalibrationDataset",
    "FakeQuantize",
    "LayerSensitivity",
    "Observer",
    "OrtAutoInt8Config",
    "OrtDynamicInt8Config",
    "OrtStaticInt8Config",
    "QuantSpec",
    "QuantizedLayer",
    "calibrate",
    "compute_qparams",
    "fake_quantize",
    "fake_quants",
    "format_sensitivity",
    "layer_sensitivity",
    "make_observer",
    "mixed_precision_plan",
    "quantize_auto_onnx",
    "quantize_dynamic_onnx",
    "quantize_layers",
    "quantize_onnx",
    "quantize_static_onnx",
    "register_quantizer",
    "resolve_reduce_range",
    "sqnr",
]
