"""What the LM search does to a model: make a base (structured width/depth pruning, Wanda/SparseGPT sparsity),
quantize it weight-only at a precision, measure its one-shot perplexity, and recover a pruned base by distillation.

Two integration points are one function each, so other implementations can be swapped in:
``quant_config`` (precision name → a ``WeightOnlyConfig``) and ``recover_base`` (a short, budgeted KD recovery of a
pruned LM from the unpruned model on the one training loop; sparse masks are held through it).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from slimtune.data.core import DataSplits
from slimtune.search.lm_space import LMSearchConfig, fitting_group, parse_precision, parse_sparsity
from slimtune.search.space import Base


def calibration_data(data: DataSplits, config: LMSearchConfig) -> DataSplits:
    """The data pruners calibrate on: the first ``samples`` train windows (fewer when there are fewer)."""
    return dataclasses.replace(data, train=data.train.take(config.samples))


def samples(data: DataSplits, config: LMSearchConfig) -> int:
    return min(config.samples, len(data.train))


def prune_config(model: nn.Module, base: Base, data: DataSplits, config: LMSearchConfig) -> Any:
    """The prune config of ``base`` (a registered LM prune method), calibrated on ``samples`` windows."""
    from slimtune.models.lm_layers import decoder_layers
    from slimtune.prune.lm_sparse import SparseGPTConfig, WandaConfig
    from slimtune.prune.lm_structured import LMStructuredConfig

    n, bs = samples(data, config), config.batch_size
    if base.kind == "width":
        r = float(base.params["ratio"])
        return LMStructuredConfig(heads_ratio=r, ffn_ratio=r, samples=n, batch_size=bs)
    if base.kind == "depth":
        blocks = len(decoder_layers(model))
        drop = min(blocks - 1, max(1, round(float(base.params["ratio"]) * blocks)))
        return LMStructuredConfig(drop_layers=drop, samples=n, batch_size=bs)
    sparsity, pattern = parse_sparsity(str(base.params["sparsity"]))
    cls = WandaConfig if base.params["method"] == "wanda" else SparseGPTConfig
    return cls(sparsity=sparsity, pattern=pattern, samples=n, batch_size=bs)


def make_base(teacher: nn.Module, base: Base, data: DataSplits, config: LMSearchConfig) -> nn.Module:
    """A copy of ``teacher`` transformed as ``base`` says (the teacher itself for ``dense``)."""
    from slimtune.prune import prune_

    if base.kind == "dense":
        return teacher
    model = copy.deepcopy(teacher)
    torch.manual_seed(config.seed)
    prune_(model, prune_config(model, base, data, config), data=calibration_data(data, config), progress=False)
    return model.eval()


def quant_config(precision: str, *, group_size: int, samples: int, batch_size: int, ragged: bool = False) -> Any:
    """The weight-only config of ``precision`` (``int4-gptq`` …) — the one place the search's quantization
    candidates are made (swap in another candidate list here)."""
    from slimtune.quantize.weight_only import config_for

    bits, method = parse_precision(precision)
    options: dict[str, Any] = {"bits": bits, "group_size": group_size, "ragged_groups": ragged}
    if method in ("gptq", "awq"):
        options.update(samples=samples, batch_size=batch_size)
    return config_for(method, **options)


def input_widths(model: nn.Module) -> list[int]:
    from slimtune.models.blocks import linear_weight
    from slimtune.quantize.weight_only.api import block_targets

    return [int(linear_weight(m).shape[1]) for m in block_targets(model).values()]


def with_precision(
    model: nn.Module, precision: str, data: DataSplits, config: LMSearchConfig
) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` at ``precision``: itself for fp32, else a quantized copy; and notes (the group size used)."""
    from slimtune.quantize.weight_only import quantize_lm_

    if precision == "fp32":
        return model, {}
    widths = input_widths(model)
    group = config.group_size if config.ragged_groups else fitting_group(widths, config.group_size)
    n = samples(data, config)
    cfg = quant_config(precision, group_size=group, samples=n, batch_size=config.batch_size,
                       ragged=config.ragged_groups and any(w % group for w in widths))  # fmt: skip
    out = copy.deepcopy(model)
    ids = torch.as_tensor(data.train.x[:n]).long()
    quantize_lm_(out, cfg, calibration=ids)
    notes: dict[str, Any] = {"group_size": group}
    if group != config.group_size:
        notes["note"] = f"group_size {config.group_size} does not divide every pruned layer; used {group}"
    return out.eval(), notes


def proxy_perplexity(model: nn.Module, data: DataSplits, config: LMSearchConfig, *, split: str = "val") -> float:
    """Perplexity on the first ``proxy_windows`` windows of ``split`` (PyTorch; quantized weights are the
    dequantized values the MatMulNBits export carries)."""
    from slimtune.train.lm import evaluate_lm

    part = getattr(data, split).take(config.proxy_windows)
    with torch.inference_mode():
        ppl = evaluate_lm(model, part, batch_size=config.batch_size)["perplexity"]
    return float(ppl) if math.isfinite(ppl) else math.inf


def recover_base(
    model: nn.Module, teacher: nn.Module, data: DataSplits, config: LMSearchConfig, *, hold_zeros: bool
) -> dict[str, Any]:
    """Short KD recovery of a pruned ``model`` from ``teacher`` in place: ``recovery_epochs`` over the first
    ``recovery_windows`` train windows (forward KL with the teacher's top-k logits cached, CE mixed in); with
    ``hold_zeros`` (sparse bases) every exact zero is held by a mask. Returns what ran. The one integration point
    for another recovery helper."""
    from slimtune.distill.lm import LMKDConfig, distill_lm_
    from slimtune.prune.unstructured import MaskCallback, masks_from_zeros
    from slimtune.train.loop import TrainConfig

    masks = {n: m for n, m in masks_from_zeros(model).items() if not bool(m.all())} if hold_zeros else {}
    part = dataclasses.replace(
        data, train=data.train.take(config.recovery_windows), val=data.val.take(config.proxy_windows)
    )
    train = TrainConfig(epochs=config.recovery_epochs, batch_size=config.batch_size, lr=config.recovery_lr,
                        seed=config.seed, restore_best=False)  # fmt: skip
    callbacks = [MaskCallback(masks)] if masks else []
    distill_lm_(model, teacher=teacher, data=part, config=LMKDConfig(), train=train, cache=True,
                callbacks=callbacks, progress=False)  # fmt: skip
    model.eval()
    return {"windows": len(part.train), "epochs": config.recovery_epochs, "lr": config.recovery_lr,
            "masked_layers": len(masks)}  # fmt: skip


__all__ = [
    "make_base",
    "proxy_perplexity",
    "prune_config",
    "quant_config",
    "recover_base",
    "with_precision",
]
