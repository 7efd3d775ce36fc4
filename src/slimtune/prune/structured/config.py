"""Options of structured pruning (``method: structured``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from slimtune._registry import did_you_mean
from slimtune.config import Config, check
from slimtune.errors import ConfigError

TARGETS = ("neurons", "channels", "heads", "ffn", "layers")
DEFAULT_RATIO = 0.5


@dataclass(frozen=True, kw_only=True)
class StructuredPruneConfig(Config):
    """Physically remove units: Linear neurons, conv channels, attention heads, FFN units, whole layers.

    ``ratio``: fraction of the units of every prunable group removed (0.5 when neither it nor ``target_macs`` is
    given); ``target_macs``: instead, the fraction of the model's MACs to keep, the ratio found by bisection.
    ``targets``: what to cut; 'layers' drops the ``layers_ratio`` fraction of removable blocks (residual blocks,
    encoder layers; rounded to the nearest count, at least one). ``importance``: how units are ranked.
    ``global_ranking``: rank units across all groups (each group loses a different share) instead of ``ratio`` per
    group. ``exclude``: regular expressions of module names left whole. ``round_to``: kept counts are multiples of
    it (unless a group has fewer units); ``channel_round_to``: kept convolution channels are also multiples of it,
    'auto' being this CPU's ONNX Runtime NCHWc block (8 with AVX2, 16 with AVX-512) for convolutions of at least two
    blocks (measured on resnet-small: half the MACs with odd channel counts ran slower than the dense model in ORT,
    multiples of 8 1.56x faster at batch 32), 1 to turn it off; ``min_keep``: units every group keeps.
    ``taylor_batches``: training batches of gradients for 'taylor'. ``seed``: for 'random'.
    ``target_latency``: instead of a ratio or MACs, the fraction of the model's ONNX Runtime latency to keep
    (at ``latency_batch``, ``latency_threads``), units chosen greedily by importance lost per millisecond saved from
    a measured per-layer latency table (``latency_table``: a saved table's path, else measured now; given with
    ``target_macs``, the table picks which units meet the MAC budget).
    """

    ratio: float | None = None
    target_macs: float | None = None
    targets: tuple[str, ...] = ("neurons", "channels", "heads", "ffn")
    layers_ratio: float = 0.0
    importance: Literal["l1", "l2", "random", "taylor", "bn-scale"] = "l1"
    global_ranking: bool = False
    exclude: tuple[str, ...] = ()
    round_to: int = 1
    channel_round_to: int | Literal["auto"] = "auto"
    min_keep: int = 1
    taylor_batches: int = 4
    seed: int = 0
    target_latency: float | None = None
    latency_table: str | None = None
    latency_batch: int = 32
    latency_threads: int = 1

    def __post_init__(self) -> None:
        check(bool(self.targets), f"targets must name at least one of {', '.join(TARGETS)}")
        for t in self.targets:
            hint = did_you_mean(t, list(TARGETS))
            check(t in TARGETS, f"unknown target '{t}'{hint}; choose from {', '.join(TARGETS)}")
        given = [n for n in ("ratio", "target_macs", "target_latency") if getattr(self, n) is not None]
        check(
            len(given) <= 1,
            "give one of ratio (fraction of units removed per group), target_macs (fraction of MACs kept) or "
            f"target_latency (fraction of latency kept), not {' and '.join(given)}",
        )
        if self.target_latency is not None:
            check(0 < self.target_latency <= 1, f"target_latency must be in (0, 1], got {self.target_latency}")
            check(bool(self.unit_targets), "target_latency needs a unit target (neurons, channels, heads or ffn)")
        check(
            self.latency_table is None or self.target_latency is not None or self.target_macs is not None,
            "latency_table guides target_latency or target_macs; give one of them (a ratio ignores the table)",
        )
        check(self.latency_batch >= 1, f"latency_batch must be >= 1, got {self.latency_batch}")
        check(self.latency_threads >= 1, f"latency_threads must be >= 1, got {self.latency_threads}")
        if self.ratio is not None:
            check(0 <= self.ratio < 1, f"ratio must be in [0, 1), got {self.ratio}")
        if self.target_macs is not None:
            check(0 < self.target_macs <= 1, f"target_macs must be in (0, 1], got {self.target_macs}")
            check(bool(self.unit_targets), "target_macs needs a unit target (neurons, channels, heads or ffn)")
        check(0 <= self.layers_ratio < 1, f"layers_ratio must be in [0, 1), got {self.layers_ratio}")
        if "layers" in self.targets:
            check(self.layers_ratio > 0, "targets include 'layers': give layers_ratio in (0, 1), the share of blocks")
        else:
            check(self.layers_ratio == 0, "layers_ratio is set but targets do not include 'layers'; add it")
        check(self.round_to >= 1, f"round_to must be >= 1, got {self.round_to}")
        check(
            self.channel_round_to == "auto" or (isinstance(self.channel_round_to, int) and self.channel_round_to >= 1),
            f"channel_round_to must be 'auto' or an integer >= 1, got {self.channel_round_to!r}",
        )
        check(self.min_keep >= 1, f"min_keep must be >= 1, got {self.min_keep}")
        check(self.taylor_batches >= 1, f"taylor_batches must be >= 1, got {self.taylor_batches}")
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"exclude pattern {pattern!r} is not a valid regular expression: {exc}") from None

    def multiple(self, target: str, units: int, unit: int = 1) -> int:
        """Kept units of a group of ``target`` with ``units`` units of ``unit`` channels each (a grouped conv's
        group) are multiples of this. 'auto' rounds only convolutions of at least two blocks: a smaller one
        would be kept whole."""
        if target != "channels" or self.channel_round_to == 1:
            return self.round_to
        if self.channel_round_to == "auto":
            from slimtune.env import nchwc_block

            block = nchwc_block()
            if units * unit < 2 * block:
                return self.round_to
        else:
            block = int(self.channel_round_to)
        return math.lcm(self.round_to, block // math.gcd(block, unit))  # in units: kept channels fill blocks

    @property
    def unit_targets(self) -> tuple[str, ...]:
        return tuple(t for t in self.targets if t != "layers")

    @property
    def effective_ratio(self) -> float:
        return DEFAULT_RATIO if self.ratio is None else self.ratio
