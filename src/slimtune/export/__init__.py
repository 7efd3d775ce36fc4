"""Export to ONNX, checked against PyTorch."""

from slimtune.export.lm_bundle import export_lm, export_lm_bundle
from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
from slimtune.export.lm_parity import check_lm_parity, lm_parity
from slimtune.export.onnx import ExportConfig, check_parity, export_onnx, ort_predict, ort_session, parity

__all__ = [
    "ExportConfig",
    "LMExportConfig",
    "check_lm_parity",
    "check_parity",
    "export_lm",
    "export_lm_bundle",
    "export_lm_onnx",
    "export_onnx",
    "lm_parity",
    "ort_predict",
    "ort_session",
    "parity",
]
