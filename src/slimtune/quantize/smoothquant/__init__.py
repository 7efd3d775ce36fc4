"""SmoothQuant W8A8 for causal LMs: per-channel smoothing folded into the previous norm (fp32 output unchanged),
then ONNX Runtime int8 (dynamic MatMulInteger or static QDQ) on the KV-cache export."""

from slimtune.quantize.smoothquant.config import SmoothQuantConfig

__all__ = ["SmoothQuantConfig"]
