"""Weight-only quantization of causal LMs (RTN, HQQ, GPTQ, AWQ) over one block-by-block calibration pass;
the result exports to ONNX Runtime's MatMulNBits (``slimtune.export.lm_nbits``)."""

from slimtune.quantize.weight_only import methods as _methods  # registers the handlers
from slimtune.quantize.weight_only.api import (
    LM_QUANTIZERS,
    quantize_lm_,
    quantized_layers,
    quantized_weight,
    register_lm_quantizer,
)
from slimtune.quantize.weight_only.config import (
    AWQConfig,
    AWQGPTQConfig,
    GPTQConfig,
    HQQConfig,
    RTNConfig,
    WeightOnlyConfig,
)
from slimtune.quantize.weight_only.grid import QuantizedWeight
from slimtune.quantize.weight_only.methods import config_for

del _methods

__all__ = [
    "LM_QUANTIZERS",
    "AWQConfig",
    "AWQGPTQConfig",
    "GPTQConfig",
    "HQQConfig",
    "QuantizedWeight",
    "RTNConfig",
    "WeightOnlyConfig",
    "config_for",
    "quantize_lm_",
    "quantized_layers",
    "quantized_weight",
    "register_lm_quantizer",
]
