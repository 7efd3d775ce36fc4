"""Pick the int8 settings by measurement on this CPU instead of hard-coding them.

The search space is a grid. For each kind in ``kinds`` and each value in ``reduce_range_options`` ×
``per_channel_options``: dynamic candidates use uint8 activations (ONNX Runtime quantizes them at run time,
so the activation type does not apply to them; per_channel=False, reduce_range=False is exactly ORT's
``quantize_dynamic`` defaults); static candidates (QDQ, int8 weights) also try every value in
``activation_type_options`` (uint8 or int8 activations) × ``ops_options`` (which ops static int8 quantizes:
``weights``, ``chain``, or ``auto``, resolved on the graph: on a conv net ``auto`` is the full int8 chain,
elsewhere it equals ``weights`` and is tried once). The defaults give 4 dynamic + 8 static = 12 candidates
(16 static on a conv net), each one an ORT quantization (a calibration run for static ones) plus its share of
the timing rounds: narrow the tuples to search faster. Repeated values are tried once.

Each candidate is built, run in ONNX Runtime on the calibration inputs, compared with the fp32 graph (argmax
agreement, near ties excused as in parity checks); all are then timed at ``batch_size`` in rounds together
with fp32 and compared by their per-round time ratios (``slimtune.evaluate.paired``): of those that keep
agreement ≥ ``min_agreement`` (and raw agreement within ``RAW_SLACK`` of the best: near ties must not hide a
worse variant) the fastest wins; near ties are re-timed up to ``max_rounds`` rounds, and a tie (within
``tie_band``) goes to the more faithful, then the smaller file. A candidate that ONNX Runtime cannot build or
load is kept in the table with its error and never chosen. The returned ``candidates`` table (settings,
agreement, latency) goes into the report, and ``reason`` names the winning settings, its speedup over ORT fp32
and the CPU's int8 support (AVX2 vs VNNI): on CPUs without VNNI full-range int8 can saturate, so the answer
differs between machines. When no candidate reaches ``min_agreement`` a one-line ``ParityError`` names the
best one.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from slimtune.config import Config, check
from slimtune.env import int8_capability
from slimtune.errors import ParityError, SlimtuneError
from slimtune.quantize.api import register_quantizer
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx
from slimtune.quantize.ort_static import OrtStaticInt8Config, quantize_static_onnx
from slimtune.quantize.qdq_graph import OpsChoice, resolve_ops

Kind = Literal["dynamic", "static"]
RAW_SLACK = 0.01  # a chosen variant's raw agreement may trail the most faithful variant's by at most this
ActivationType = Literal["quint8", "qint8"]


@dataclass(frozen=True, kw_only=True)
class OrtAutoInt8Config(Config):
    """The grid to measure (see the module docstring); ``exclude_layers``: torch layer names kept fp32 in
    every candidate."""

    kinds: tuple[Kind, ...] = ("dynamic", "static")
    reduce_range_options: tuple[bool, ...] = (False, True)
    per_channel_options: tuple[bool, ...] = (True, False)
    activation_type_options: tuple[ActivationType, ...] = ("quint8", "qint8")  # static candidates only
    min_agreement: float = 0.99
    batch_size: int = 8
    repeats: int = 30  # calls per candidate over the first ``rounds`` rounds
    rounds: int = 15
    max_rounds: int = 60
    tie_band: float = 0.03
    ops_options: tuple[OpsChoice, ...] = ("weights", "auto")  # static candidates only
    exclude_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, allowed in (
            ("kinds", get_args(Kind)),
            ("reduce_range_options", (False, True)),
            ("per_channel_options", (False, True)),
            ("activation_type_options", get_args(ActivationType)),
            ("ops_options", get_args(OpsChoice)),
        ):
            values = getattr(self, field)
            check(bool(values), f"{field} must name at least one of {', '.join(map(repr, allowed))}")
            for v in values:  # bool(1) == True: compare types too
                ok = isinstance(v, type(allowed[0])) and v in allowed
                check(ok, f"{field}: {v!r} is not one of {', '.join(map(repr, allowed))}")
        check(0 < self.min_agreement <= 1, f"min_agreement must be in (0, 1], got {self.min_agreement}")
        check(self.batch_size >= 1 and self.repeats >= 1, "batch_size and repeats must be >= 1")
        check(1 <= self.rounds <= self.max_rounds, "need 1 <= rounds <= max_rounds")
        check(0 <= self.tie_band < 0.5, f"tie_band must be in [0, 0.5), got {self.tie_band}")


@dataclass(frozen=True)
class Candidate:
    kind: Kind
    reduce_range: bool
    per_channel: bool = True
    activation_type: ActivationType = "quint8"
    ops: str = "weights"

    @property
    def label(self) -> str:
        text = f"{self.kind}, reduce_range={self.reduce_range}, per_channel={self.per_channel}"
        return text if self.kind == "dynamic" else f"{text}, activations={self.activation_type}, ops={self.ops}"

    @property
    def slug(self) -> str:
        return f"{self.kind}-rr{int(self.reduce_range)}-pc{int(self.per_channel)}-{self.activation_type}-{self.ops}"


def search_space(config: OrtAutoInt8Config, resolve: Callable[[OpsChoice], str] | None = None) -> list[Candidate]:
    """Every combination ``config`` asks for, once each, in a stable order; ``resolve`` maps an ``ops``
    option to what it means on the graph at hand (``auto`` → ``chain`` or ``weights``)."""
    ops = list(dict.fromkeys((resolve or (lambda o: "weights" if o == "auto" else o))(o) for o in config.ops_options))
    out: list[Candidate] = []
    for kind in dict.fromkeys(config.kinds):
        for rr in dict.fromkeys(config.reduce_range_options):
            if kind == "dynamic":
                out += [Candidate("dynamic", rr, pc) for pc in dict.fromkeys(config.per_channel_options)]
                continue
            for pc in dict.fromkeys(config.per_channel_options):
                for act in dict.fromkeys(config.activation_type_options):
                    out += [Candidate("static", rr, pc, act, o) for o in ops]
    return out


def _round_timer(
    sessions: Mapping[str, Any], name: str, batch: np.ndarray, block: int
) -> Callable[[Sequence[str]], dict[str, float]]:
    """One timing round: ``block`` calls of each named session in turn, ms per call (after a warm-up)."""
    for session in sessions.values():
        for _ in range(5):
            session.run(None, {name: batch})

    def time_round(keys: Sequence[str]) -> dict[str, float]:
        out = {}
        for k in keys:
            start = time.perf_counter()
            for _ in range(block):
                sessions[k].run(None, {name: batch})
            out[k] = (time.perf_counter() - start) * 1000 / block
        return out

    return time_round


def _agreement(session: Any, x: np.ndarray, ref: np.ndarray, min_agreement: float) -> tuple[float, float]:
    """Argmax agreement with the fp32 logits ``ref``: as parity checks judge it (near ties excused), and raw."""
    from slimtune.export.onnx import agreement_stats, effective_agreement, ort_predict

    stats = agreement_stats(ref, ort_predict(session, x))
    return effective_agreement(stats, min_agreement), float(stats["argmax_agreement"])


def _build(c: Candidate, src: Path, path: Path, config: OrtAutoInt8Config, calibration: torch.Tensor) -> None:
    if c.kind == "dynamic":
        dynamic = OrtDynamicInt8Config(
            reduce_range=c.reduce_range, per_channel=c.per_channel, exclude_layers=config.exclude_layers
        )
        quantize_dynamic_onnx(src, path, dynamic, None)
    else:
        static = OrtStaticInt8Config(
            reduce_range=c.reduce_range,
            per_channel=c.per_channel,
            activation_type=c.activation_type,
            exclude_layers=config.exclude_layers,
            ops=c.ops,  # type: ignore[arg-type]
        )
        quantize_static_onnx(src, path, static, calibration)


def _cpu() -> str:
    cap = int8_capability()
    return "VNNI" if cap["vnni"] else ("AVX2, no VNNI" if cap["avx2"] else "no AVX2")


@register_quantizer(
    "ort-auto-int8", OrtAutoInt8Config, help="measure int8 variants here, keep the fastest faithful one"
)
def quantize_auto_onnx(
    src: Path, dst: Path, config: OrtAutoInt8Config, calibration: torch.Tensor | None
) -> dict[str, Any]:
    from slimtune.export.onnx import ort_predict, ort_session

    if calibration is None or len(calibration) == 0:
        raise ParityError("ort-auto-int8 needs calibration inputs to compare candidates; pass calibration examples")
    from slimtune.evaluate.paired import decide, loaded_warning

    x, threads = calibration.numpy(), torch.get_num_threads()
    fp32 = ort_session(src, threads=threads)
    name = fp32.get_inputs()[0].name
    ref = ort_predict(fp32, x)
    batch = np.concatenate([x] * -(-config.batch_size // len(x)))[: config.batch_size]
    rows: list[dict[str, Any]] = [{"candidate": "fp32", "kind": "fp32", "agreement": 1.0}]
    paths: dict[str, Path] = {}
    sessions: dict[str, Any] = {"fp32": fp32}
    try:
        for c in search_space(config, lambda o: resolve_ops(o, src)[0]):
            row: dict[str, Any] = {"candidate": c.label, "kind": c.kind, "reduce_range": c.reduce_range,
                                   "per_channel": c.per_channel, "activation_type": c.activation_type,
                                   "ops": c.ops}  # fmt: skip
            paths[c.label] = path = dst.with_name(f"{dst.stem}.{c.slug}.onnx")
            try:
                _build(c, src, path, config, calibration)
                session = ort_session(path, threads=threads)
                row["agreement"], row["raw_agreement"] = _agreement(session, x, ref, config.min_agreement)
                row["bytes"] = path.stat().st_size
                sessions[c.label] = session
            except SlimtuneError:
                raise
            except Exception as exc:  # ORT cannot build or run this combination here: record it, go on
                row |= {"agreement": None, "latency_ms": None, "error": str(exc).strip().splitlines()[0][:200]}
            rows.append(row)
        tried = [r for r in rows[1:] if r["agreement"] is not None]
        ok = [r for r in tried if r["agreement"] >= config.min_agreement]
        if not ok:
            if not tried:
                first = rows[1]
                raise ParityError(f"ort-auto-int8: ONNX Runtime failed on every int8 variant (first: "
                                  f"{first['candidate']}: {first['error']})")  # fmt: skip
            best = max(tried, key=lambda r: r["agreement"])
            raise ParityError(
                f"ort-auto-int8: no int8 variant agrees with fp32 on ≥ {config.min_agreement:.0%} of calibration "
                f"inputs (best of {len(tried)}: {best['candidate']} at {best['agreement']:.2%}); keep this model "
                "in fp32 or exclude layers"
            )
        best_raw = max(r["raw_agreement"] for r in ok)  # excused near ties must not hide a worse variant
        close = [r for r in ok if r["raw_agreement"] >= best_raw - RAW_SLACK]
        # every built candidate is timed in the rounds (for the table); the choice is among the close ones,
        # most faithful first, then the smaller file: a tie goes to the earlier one
        preference = [r["candidate"] for r in sorted(close, key=lambda r: (-r["raw_agreement"], r["bytes"]))]
        others = [r["candidate"] for r in tried if r["candidate"] not in preference]
        timer = _round_timer(sessions, name, batch, max(1, config.repeats // config.rounds))
        decision = decide(preference, timer, reference="fp32", rounds=config.rounds,
                          max_rounds=config.max_rounds, band=config.tie_band, also=others)  # fmt: skip
        chosen = next(r for r in close if r["candidate"] == decision.winner)
        shutil.copyfile(paths[chosen["candidate"]], dst)
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
    fp32_ms = statistics.median(decision.times["fp32"])
    rows[0]["latency_ms"] = fp32_ms
    for r in tried:
        k = r["candidate"]
        r["latency_ms"] = statistics.median(decision.times[k])
        r["ratio_to_fp32"] = decision.ratio[k]
    speedup = 1 / decision.ratio[decision.winner]["median"]
    s = decision.ratio[decision.winner]
    verdict = "" if speedup >= 1 else "; slower than fp32: no int8 variant pays off here"
    ties = f"; as fast as it (within {config.tie_band:.0%}): {', '.join(decision.ties)}" if decision.ties else ""
    warning = loaded_warning(decision)
    reason = (
        f"{chosen['candidate']}: fastest of the {len(close)} of {len(rows) - 1} int8 variants with ≥ "
        f"{config.min_agreement:.0%} argmax agreement with fp32 and within {RAW_SLACK:.0%} of the best raw "
        f"agreement (it has {chosen['agreement']:.2%}, raw {chosen['raw_agreement']:.2%}); "
        f"{speedup:.2f}× ORT fp32 (per-round time ratio {s['median']:.3g}, quartiles {s['low']:.3g}–{s['high']:.3g} "
        f"over {decision.rounds} rounds; {chosen['latency_ms']:.3g} vs {fp32_ms:.3g} ms at batch {config.batch_size}) "
        f"on this CPU ({_cpu()}){ties}{verdict}" + (f"; {warning}" if warning else "")
    )
    keys = ("reduce_range", "per_channel", "activation_type", "ops")
    return {"chosen": chosen["candidate"], "reason": reason, **{k: chosen[k] for k in keys}, "candidates": rows,
            "timing": decision.summary()}  # fmt: skip
