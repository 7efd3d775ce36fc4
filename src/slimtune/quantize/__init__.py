"""Quantization: k-bit affine fake-quant and calibration observers for simulation; int8 executed by
ONNX Runtime (dynamic, calibrated static, or chosen by measurement) through one verb; mixed precision
(the most sensitive layers kept fp32) and bits per layer read back from the model or graph."""

from slimtune.quantize.affine import FakeQuantize, QuantSpec, compute_qparams, fake_quantize
from slimtune.quantize.api import QUANTIZERS, quantize_onnx, register_quantizer
from slimtune.quantize.binary import BinaryConfig, TernaryConfig, binarize_, fold_, lowbit_size, ternarize_
from slimtune.quantize.calibration import CalibrationDataset, QuantizedLayer, calibrate, fake_quants, quantize_layers
from slimtune.quantize.clustering import CentroidFineTune, ClusterConfig, Clustered, cluster_
from slimtune.quantize.codec import compressed_breakdown, load_compressed, save_compressed
from slimtune.quantize.mixed import MixedPrecisionConfig, MixedPrecisionPlan, plan_mixed_precision, quantize_model
from slimtune.quantize.observers import OBSERVERS, Observer, make_observer
from slimtune.quantize.ort_auto import OrtAutoInt8Config, quantize_auto_onnx
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx, resolve_reduce_range
from slimtune.quantize.ort_static import OrtStaticInt8Config, quantize_static_onnx
from slimtune.quantize.precision import nodes_for_layers, onnx_precision, torch_precision
from slimtune.quantize.qat import QATCallback, QATConfig, convert_qat, export_qat_onnx, prepare_qat_, qat_
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
    "BinaryConfig",
    "CalibrationDataset",
    "CentroidFineTune",
    "ClusterConfig",
    "Clustered",
    "FakeQuantize",
    "LayerSensitivity",
    "MixedPrecisionConfig",
    "MixedPrecisionPlan",
    "Observer",
    "OrtAutoInt8Config",
    "OrtDynamicInt8Config",
    "OrtStaticInt8Config",
    "QATCallback",
    "QATConfig",
    "QuantSpec",
    "QuantizedLayer",
    "TernaryConfig",
    "binarize_",
    "calibrate",
    "cluster_",
    "compressed_breakdown",
    "compute_qparams",
    "convert_qat",
    "export_qat_onnx",
    "fake_quantize",
    "fake_quants",
    "fold_",
    "format_sensitivity",
    "layer_sensitivity",
    "load_compressed",
    "lowbit_size",
    "make_observer",
    "mixed_precision_plan",
    "nodes_for_layers",
    "onnx_precision",
    "plan_mixed_precision",
    "prepare_qat_",
    "qat_",
    "quantize_auto_onnx",
    "quantize_dynamic_onnx",
    "quantize_layers",
    "quantize_model",
    "quantize_onnx",
    "quantize_static_onnx",
    "register_quantizer",
    "resolve_reduce_range",
    "save_compressed",
    "sqnr",
    "ternarize_",
    "torch_precision",
]
