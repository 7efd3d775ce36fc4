"""Handlers of the weight-only methods: RTN and HQQ need no data; GPTQ and AWQ run the one calibration pass
(``slimtune.models.blocks.calibration_pass``) with their block algorithm."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtune.models.blocks import calibration_pass, linear_weight
from slimtune.quantize.weight_only.api import block_targets, register_lm_quantizer, store_
from slimtune.quantize.weight_only.awq import AWQ
from slimtune.quantize.weight_only.config import AWQConfig, AWQGPTQConfig, GPTQConfig, HQQConfig, RTNConfig
from slimtune.quantize.weight_only.gptq_block import GPTQ
from slimtune.quantize.weight_only.grid import hqq, rtn


@register_lm_quantizer("rtn", RTNConfig, help="round-to-nearest on the per-group min/max grid (no data)")
def _rtn(model: nn.Module, config: RTNConfig, calibration: torch.Tensor | None) -> None:
    with torch.no_grad():
        for layer in block_targets(model).values():
            w = linear_weight(layer).float()
            store_(layer, rtn(w, bits=config.bits, group_size=config.group_size, symmetric=config.symmetric))


@register_lm_quantizer(
    "hqq", HQQConfig, help="half-quadratic quantization: scales and zero points refined by an l_p loop"
)
def _hqq(model: nn.Module, config: HQQConfig, calibration: torch.Tensor | None) -> None:
    with torch.no_grad():
        for layer in block_targets(model).values():
            w = linear_weight(layer).float()
            store_(
                layer,
                hqq(w, bits=config.bits, group_size=config.group_size, symmetric=config.symmetric, iters=config.iters),
            )


@register_lm_quantizer("gptq", GPTQConfig, help="GPTQ: Hessian-weighted error feedback from calibration text")
def _gptq(model: nn.Module, config: GPTQConfig, calibration: torch.Tensor | None) -> None:
    assert calibration is not None
    calibration_pass(model, calibration, GPTQ(config), batch_size=config.batch_size)


@register_lm_quantizer("awq", AWQConfig, help="AWQ: activation-aware channel scales folded into the previous op")
def _awq(model: nn.Module, config: AWQConfig, calibration: torch.Tensor | None) -> None:
    assert calibration is not None
    algo = AWQ(bits=config.bits, group_size=config.group_size, symmetric=config.symmetric, grid=config.grid,
               clip=config.clip)  # fmt: skip
    calibration_pass(model, calibration, algo, batch_size=config.batch_size)


@register_lm_quantizer(
    "awq-gptq", AWQGPTQConfig, help="AWQ channel scales folded first, then GPTQ on the scaled weights"
)
def _awq_gptq(model: nn.Module, config: AWQGPTQConfig, calibration: torch.Tensor | None) -> None:
    from slimtune.quantize.weight_only.awq_gptq import AWQGPTQ

    assert calibration is not None
    calibration_pass(model, calibration, AWQGPTQ(config), batch_size=config.batch_size)


def method_names() -> list[str]:
    from slimtune.quantize.weight_only.api import LM_QUANTIZERS

    return LM_QUANTIZERS.names()


def config_for(method: str, **options: Any) -> Any:
    """The config of a registered method, built from plain options (recipes, CLI)."""
    from slimtune.quantize.weight_only.api import LM_QUANTIZERS

    return LM_QUANTIZERS.get(method).from_dict(options, where=f"quantize ({method})")
