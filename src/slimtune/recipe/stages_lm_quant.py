"""The ``quantize`` stage for causal LMs. The classifier ``quantize`` stage hands these methods over here:

- ``method: rtn|hqq|gptq|awq`` quantizes the current model's weights in place (calibration windows from the
  recipe data's train split), then exports the KV-cache ONNX with MatMulNBits and checks it (``export_lm``);
  ``bits_budget`` (average stored bits per weight) keeps the most sensitive Linears at ``high_bits`` (8) under
  that budget (``quantize.weight_only.mixed``; ``sensitivity_windows`` calibration windows measure it);
- ``method: smoothquant`` smooths the activations into the weights (α, or the best of ``alpha_grid`` on the
  validation windows' W8A8 perplexity) and exports ONNX Runtime int8, ``mode: dynamic|static``.

The report row then measures the ONNX file (perplexity, decode tokens/s) and counts the layers per precision::

    - quantize: {method: gptq, bits: 4, group_size: 64, samples: 32, export: {accuracy_level: 4}}
    - quantize: {method: gptq, bits: 4, group_size: 64, samples: 32, bits_budget: 4.5}
    - quantize: {method: smoothquant, alpha_grid: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8], mode: dynamic, samples: 32}
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from slimtune.errors import ConfigError, DataError

SMOOTHQUANT = "smoothquant"
BUDGET_KEYS = {"bits_budget": "bits_budget", "high_bits": "high_bits", "sensitivity_windows": "windows",
               "granularity": "granularity"}  # fmt: skip
EXAMPLES = (
    "slimtune stage quantize --model smollm2-135m --data shakespeare --set method=gptq --set bits=4 "
    "--set group_size=64 --set samples=32",
    "slimtune stage quantize --model smollm2-135m --data shakespeare --set method=gptq --set group_size=64 "
    "--set bits_budget=4.5",
    "slimtune stage quantize --model smollm2-135m --data shakespeare --set method=smoothquant "
    "--set 'alpha_grid=[0.3, 0.5, 0.7]' --set mode=dynamic",
)


def lm_methods() -> list[str]:
    from slimtune.quantize.weight_only import LM_QUANTIZERS

    return [*LM_QUANTIZERS.names(), SMOOTHQUANT]


def is_lm_method(method: Any) -> bool:
    return isinstance(method, str) and method in lm_methods()


@dataclass(frozen=True)
class LMQuantizeStageConfig:
    method: str
    config: Any  # a WeightOnlyConfig or a SmoothQuantConfig
    export: Any  # an LMExportConfig
    budget: Any = None  # a BitsBudgetConfig (weight-only methods with bits_budget)


def lm_methods_help() -> str:
    """The LM methods of the ``quantize`` stage with their options (``slimtune stage quantize --help``)."""
    from slimtune.export.lm_onnx import LMExportConfig
    from slimtune.quantize.smoothquant import SmoothQuantConfig
    from slimtune.quantize.weight_only import LM_QUANTIZERS
    from slimtune.quantize.weight_only.mixed import BitsBudgetConfig
    from slimtune.recipe.reference import config_options

    lines = ["causal LMs: method = " + " | ".join(lm_methods())]
    for name in LM_QUANTIZERS.names():
        lines.append(f"  method {name}: {LM_QUANTIZERS.help(name)}")
        lines += [f"      {o.line()}" for o in config_options(LM_QUANTIZERS.get(name))]
    sq_help = "SmoothQuant W8A8, then ONNX Runtime int8 (dynamic MatMulInteger | static QDQ)"
    lines.append(f"  method {SMOOTHQUANT}: {sq_help}")
    lines += [f"      {o.line()}" for o in config_options(SmoothQuantConfig)]
    lines.append("  mixed precision (rtn|hqq|gptq|awq): the most sensitive Linears at high_bits under bits_budget")
    renamed = {v: k for k, v in BUDGET_KEYS.items()}
    for o in config_options(BitsBudgetConfig, instance=BitsBudgetConfig(bits_budget=4.5)):
        note = "required to turn it on; stored bits per weight, scales counted" if o.key == "bits_budget" else ""
        lines.append(f"      {replace(o, key=renamed.get(o.key, o.key), note=note).line()}")
    lines.append("  export (every LM method): the KV-cache ONNX and its parity check")
    lines += [f"      {o.line()}" for o in config_options(LMExportConfig, prefix="export.")]
    lines += ["  examples:", *(f"    {e}" for e in EXAMPLES)]
    return "\n".join(lines)


class LMQuantizeStage:
    def parse(self, raw: dict[str, Any], *, where: str) -> LMQuantizeStageConfig:
        from slimtune.export.lm_onnx import LMExportConfig
        from slimtune.quantize.weight_only.candidates import lm_quant_config
        from slimtune.quantize.weight_only.mixed import BitsBudgetConfig

        raw = dict(raw)
        method = raw.pop("method")
        export = LMExportConfig.from_dict(raw.pop("export", None), where=f"{where}.export")
        budget_raw = {BUDGET_KEYS[k]: raw.pop(k) for k in list(raw) if k in BUDGET_KEYS}
        budget = None
        if budget_raw and method == SMOOTHQUANT:
            raise ConfigError(f"{where}: bits_budget is for weight-only methods (rtn|hqq|gptq|awq), not smoothquant")
        if budget_raw:
            if "bits_budget" not in budget_raw:
                raise ConfigError(f"{where}: high_bits / sensitivity_windows / granularity need bits_budget (e.g. 4.5)")
            budget = BitsBudgetConfig.from_dict(budget_raw, where=where)
        config = lm_quant_config(method, raw, where=where)
        if budget is not None and config.bits >= budget.high_bits:
            raise ConfigError(f"{where}: bits_budget promotes layers to high_bits {budget.high_bits}, but bits is "
                              f"already {config.bits}; use a lower bits (e.g. 4)")  # fmt: skip
        return LMQuantizeStageConfig(method, config, export, budget)

    def run(self, ctx: Any, cfg: LMQuantizeStageConfig, out: Path) -> Any:
        from slimtune.export.lm_bundle import export_lm
        from slimtune.models import save_model
        from slimtune.recipe.stages import StageOutput

        if getattr(ctx.data, "kind", None) != "lm":
            raise ConfigError(f"quantize method '{cfg.method}' is for causal LMs; the recipe data is not text")
        samples = int(getattr(cfg.config, "samples", 0))
        if cfg.budget is not None:
            samples = max(samples, cfg.budget.windows)
        train = _calibration(ctx, samples)
        info: dict[str, Any] = {"method": cfg.method, **cfg.config.to_dict()}
        if cfg.method == SMOOTHQUANT:
            from slimtune.quantize.smoothquant.api import smoothquant_lm_

            val = ctx.data.val.x if len(ctx.data.val.x) else None
            info["smoothquant"] = smoothquant_lm_(ctx.model, cfg.config, calibration=train, validation=val)
        elif cfg.budget is not None:
            from slimtune.quantize.weight_only.mixed import quantize_lm_mixed_

            plan = quantize_lm_mixed_(ctx.model, cfg.config, cfg.budget, calibration=train)
            info["bits_budget"] = {k: plan[k] for k in ("budget", "average_bits", "layers_per_bits", "bits")}
        else:
            from slimtune.quantize.weight_only import quantize_lm_

            n = int(getattr(cfg.config, "samples", 0))
            quantize_lm_(ctx.model, cfg.config, calibration=train[:n] if n else None)
        path = out / "model.onnx"
        windows = ctx.data.test.x[: cfg.export.windows, : cfg.export.window_length]  # type: ignore[attr-defined]
        report = export_lm(ctx.model, path, windows=windows, config=cfg.export)
        save_model(ctx.model, out / "model")  # the fake-quant weights (the codes live in the ONNX)
        return StageOutput(path, model=ctx.model, onnx=path, parity=report,
                           extra={"quantization": info, "lm_parity": report})  # fmt: skip


def _calibration(ctx: Any, samples: int) -> torch.Tensor:
    """Train windows for calibration, full (unpadded) ones first: padding would skew the statistics."""
    train, labels = ctx.data.train.x, ctx.data.train.y
    unpadded = train[~(labels == -100).any(dim=1)]
    if len(unpadded) >= samples:
        train = unpadded
    if samples and len(train) < samples:
        raise DataError(
            f"the calibration set has {len(train)} windows but {samples} samples were requested; "
            "lower samples or use more text"
        )
    return train[:samples] if samples else train[:0]
