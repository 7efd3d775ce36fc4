"""Recipe stages that store weights in few bits, each writing ONE entropy-coded file (``model.stdc``, the
Deep Compression codec) whose size is the row's bytes on disk and whose decoded model the row measures:

    - {stage: compress, bits: 4, layer_bits: {"net\\.5": 5}, dtype: float16, train: {epochs: 2, lr: 1e-3}}
    - {stage: lowbit, kind: ternary, threshold: 0.7, train: {epochs: 5, lr: 1e-3}}

``compress``: k-means weight sharing per layer (2**bits centroids, zeros kept: pruning first gives the full
prune → cluster → Huffman pipeline), centroid fine-tuning, then Huffman coding of cluster indices and of the
gaps between non-zeros. ``lowbit``: binary (XNOR-Net) or ternary (TWN) weights trained with a straight-through
estimator, then folded to plain layers (first and last layers stay float unless ``exclude`` says otherwise).
Either way the file must decode to exactly the model it was written from (checked), which then goes on to
later stages (export, quantize...) as an ordinary model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.config import Config
from slimtune.errors import ConfigError, ParityError
from slimtune.models import save_model
from slimtune.quantize.binary import BinaryConfig, TernaryConfig, fold_, lowbit_, lowbit_size
from slimtune.quantize.clustering import CentroidFineTune, ClusterConfig, cluster_
from slimtune.quantize.codec import compressed_breakdown, load_compressed, save_compressed
from slimtune.recipe.stages import STAGES, Context, StageOutput, _train, masks_if_sparse
from slimtune.train import TrainConfig, predict


def _write(ctx: Context, model: nn.Module, out: Path) -> tuple[Path, nn.Module]:
    """Encode ``model`` to ``out/model.stdc`` and decode it; the decoded model must give identical logits."""
    path = save_compressed(model, out / "model.stdc")
    decoded = load_compressed(path)
    x = ctx.data.test.x
    if isinstance(x, torch.Tensor) and not torch.equal(predict(model, x[:64]), predict(decoded, x[:64])):
        raise ParityError(f"'{path}' does not decode to the model it was written from; please report this bug")
    save_model(decoded, out / "model")  # what a resumed recipe reloads
    return path, decoded


@dataclass(frozen=True, kw_only=True)
class CompressStageConfig(Config):
    cluster: ClusterConfig = ClusterConfig(dtype="float16")
    train: TrainConfig | None = TrainConfig(epochs=1, lr=1e-3)  # centroid fine-tuning; null: none


class CompressStage:
    """Deep Compression's last two steps on the current (pruned) model: cluster, fine-tune the centroids,
    Huffman-code. Options: ``ClusterConfig``'s (bits, layer_bits, init, exclude, dtype...) and ``train``."""

    def parse(self, raw: dict[str, Any], *, where: str) -> CompressStageConfig:
        raw = dict(raw)
        train = raw.pop("train", {"epochs": 1, "lr": 1e-3})
        cluster = ClusterConfig.from_dict({"dtype": "float16", **raw}, where=where)
        return CompressStageConfig(
            cluster=cluster, train=None if train is None else TrainConfig.from_dict(train, where=f"{where}.train")
        )

    def run(self, ctx: Context, cfg: CompressStageConfig, out: Path) -> StageOutput:
        clusters = cluster_(ctx.model, cfg.cluster)
        if not clusters:
            raise ConfigError("compress: no Linear/Conv layer left to cluster; check exclude")
        if cfg.train is not None:
            _train(ctx, ctx.model, cfg.train, out, desc="centroids", extra=[CentroidFineTune(clusters)])
        path, decoded = _write(ctx, ctx.model, out)
        ctx.masks = masks_if_sparse(decoded)
        bits = {name: cfg.cluster.bits_for(name) for name in clusters}
        return StageOutput(path, model=decoded, extra={"compressed": compressed_breakdown(path), "cluster_bits": bits})


@dataclass(frozen=True, kw_only=True)
class LowBitStageConfig(Config):
    weights: BinaryConfig | TernaryConfig
    train: TrainConfig = TrainConfig(epochs=3, lr=1e-3)


class LowBitStage:
    """Binary or ternary weights (``kind``), trained with the STE on the one loop, folded, entropy-coded.
    Other options are ``BinaryConfig``'s or ``TernaryConfig``'s (clip, threshold, exclude)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> LowBitStageConfig:
        raw = dict(raw)
        kind = raw.pop("kind", None)
        kinds: dict[str, type[BinaryConfig] | type[TernaryConfig]] = {"binary": BinaryConfig, "ternary": TernaryConfig}
        if not isinstance(kind, str) or kind not in kinds:
            raise ConfigError(f"{where}.kind must be binary or ternary, got {kind!r}")
        train = raw.pop("train", None)
        weights = kinds[kind].from_dict(raw, where=where)
        train_cfg = TrainConfig.from_dict(train, where=f"{where}.train") if train is not None else TrainConfig(epochs=3)
        return LowBitStageConfig(weights=weights, train=train_cfg)

    def run(self, ctx: Context, cfg: LowBitStageConfig, out: Path) -> StageOutput:
        layers = lowbit_(ctx.model, cfg.weights)
        if not layers:
            raise ConfigError("lowbit: no Linear/Conv layer selected; check exclude")
        ctx.masks = None  # binary weights are never zero; ternary ones choose their own zeros
        _train(ctx, ctx.model, cfg.train, out, desc=type(cfg.weights).__name__.removesuffix("Config").lower())
        fold_(ctx.model)
        size = lowbit_size(ctx.model)
        path, decoded = _write(ctx, ctx.model, out)
        extra = {"lowbit": {"layers": size.layers, "bits_per_weight": round(size.bits_per_weight, 3)}}
        return StageOutput(path, model=decoded, extra={**extra, "compressed": compressed_breakdown(path)})


STAGES.add("compress", CompressStage(), help="Deep Compression: cluster weights, fine-tune centroids, Huffman-code")
STAGES.add("lowbit", LowBitStage(), help="binary or ternary weights trained with STE, folded and entropy-coded")
