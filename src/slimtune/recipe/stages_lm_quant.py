"""The ``quantize`` stage for causal LMs: ``method: rtn|hqq|gptq|awq`` quantizes the current model's weights
in place (calibration windows from the recipe data's train split), then exports the KV-cache ONNX with
MatMulNBits and checks it (``export_lm``). The classifier ``quantize`` stage hands these methods over here::

    - quantize: {method: gptq, bits: 4, group_size: 64, symmetric: true, samples: 32,
                 export: {accuracy_level: 4, greedy_tokens: 16}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimtune.errors import ConfigError, DataError


def is_lm_method(method: Any) -> bool:
    from slimtune.quantize.weight_only import LM_QUANTIZERS

    return isinstance(method, str) and method in LM_QUANTIZERS


@dataclass(frozen=True)
class LMQuantizeStageConfig:
    method: str
    config: Any  # a WeightOnlyConfig
    export: Any  # an LMExportConfig


class LMQuantizeStage:
    def parse(self, raw: dict[str, Any], *, where: str) -> LMQuantizeStageConfig:
        from slimtune.export.lm_onnx import LMExportConfig
        from slimtune.quantize.weight_only import LM_QUANTIZERS

        raw = dict(raw)
        method = raw.pop("method")
        export = LMExportConfig.from_dict(raw.pop("export", None), where=f"{where}.export")
        config = LM_QUANTIZERS.get(method).from_dict(raw, where=where)
        return LMQuantizeStageConfig(method, config, export)

    def run(self, ctx: Any, cfg: LMQuantizeStageConfig, out: Path) -> Any:
        from slimtune.export.lm_bundle import export_lm
        from slimtune.models import save_model
        from slimtune.quantize.weight_only import quantize_lm_
        from slimtune.recipe.stages import StageOutput

        if getattr(ctx.data, "kind", None) != "lm":
            raise ConfigError(f"quantize method '{cfg.method}' is for causal LMs; the recipe data is not text")
        train, labels = ctx.data.train.x, ctx.data.train.y
        unpadded = train[~(labels == -100).any(dim=1)]  # padding would skew the statistics: prefer full windows
        samples = int(getattr(cfg.config, "samples", 0))
        if len(unpadded) >= samples:
            train = unpadded
        if samples and len(train) < samples:
            raise DataError(
                f"the calibration set has {len(train)} windows but {samples} samples were requested; "
                "lower samples or use more text"
            )
        quantize_lm_(ctx.model, cfg.config, calibration=train[:samples] if samples else None)
        path = out / "model.onnx"
        windows = ctx.data.test.x[: cfg.export.windows, : cfg.export.window_length]  # type: ignore[attr-defined]
        report = export_lm(ctx.model, path, windows=windows, config=cfg.export)
        save_model(ctx.model, out / "model")  # the fake-quant weights (the codes live in the ONNX)
        info = {"method": cfg.method, **cfg.config.to_dict()}
        return StageOutput(path, model=ctx.model, extra={"quantization": info, "lm_parity": report})
