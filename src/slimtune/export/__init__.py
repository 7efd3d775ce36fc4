"""Export to ONNX, checked against PyTorch."""

from slimtune.export.onnx import ExportConfig, check_parity, export_onnx, ort_predict, ort_session, parity

__all__ = ["ExportConfig", "check_parity", "export_onnx", "ort_predict", "ort_session", "parity"]
