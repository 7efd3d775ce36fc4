"""Pick the int8 settings by measurement on this CPU instead of hard-coding them.

The search space is a grid. For each kind in ``kinds`` and each value in ``reduce_range_options``:
dynamic candidates keep per-channel weights and uint8 activations (ONNX Runtime quantizes them to uint8
at run time, so the activation type does not apply to them); static candidates (QDQ, int8 weights) also
try every value in ``per_channel_options`` × ``activation_type_options`` (uint8 or int8 activations).
The defaults give 2 dynamic + 8 static = 10 candidates, each one an ORT quantization (a calibration run for
static ones) plus a timing run: narrow the tuples to search faster. Repeated values are tried once.

Each candidate is built, run in ONNX Runtime on the calibration inputs, compared with the fp32 graph (argmax
agreement, near ties excused as in parity checks) and timed at ``batch_size``; the fastest one that keeps
agreement ≥ ``min_agreement`` (and raw agreement within ``RAW_SLACK`` of the best: near ties must not hide a
worse variant) wins. A candidate that ONNX Runtime cannot build or load is kept in the table
with its error and never chosen. The returned ``candidates`` table (settings, agreement, latency) goes into
the report, and ``reason`` names the winning settings, its speedup over ORT fp32 and the CPU's int8 support
(AVX2 vs VNNI): on CPUs without VNNI full-range int8 can saturate, so the answer differs between machines.
When no candidate reaches ``min_agreement`` a one-line ``ParityError`` names the best one.
"""

from __future__ import annotations

import shutil
import statistics
import time
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

Kind = Literal["dynamic", "static"]
RAW_SLACK = 0.01  # a chosen variant's raw agreement may trail the most faithful variant's by at most this
ActivationType = Literal["quint8", "qint8"]


@dataclass(frozen=True, kw_only=True)
class OrtAutoInt8Config(Config):
    """The grid to measure (see the module docstring); ``exclude_layers``: torch layer names kept fp32 in
    every candidate."""

    kinds: tuple[Kind, ...] = ("dynamic", "static")
    reduce_range_options: tuple[bool, ...] = (False, True)
    per_channel_options: tuple[bool, ...] = (True, False)  # static candidates only
    activation_type_options: tuple[ActivationType, ...] = ("quint8", "qint8")  # static candidates only
    min_agreement: float = 0.99
    batch_size: int = 8
    repeats: int = 30
    exclude_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, allowed in (
            ("kinds", get_args(Kind)),
            ("reduce_range_options", (False, True)),
            ("per_channel_options", (False, True)),
            ("activation_type_options", get_args(ActivationType)),
        ):
            values = getattr(self, field)
            check(bool(values), f"{field} must name at least one of {', '.join(map(repr, allowed))}")
            for v in values:  # bool(1) == True: compare types too
                ok = isinstance(v, type(allowed[0])) and v in allowed
                check(ok, f"{field}: {v!r} is not one of {', '.join(map(repr, allowed))}")
        check(0 < self.min_agreement <= 1, f"min_agreement must be in (0, 1], got {self.min_agreement}")
        check(self.batch_size >= 1 and self.repeats >= 1, "batch_size and repeats must be >= 1")


@dataclass(frozen=True)
class Candidate:
    kind: Kind
    reduce_range: bool
    per_channel: bool = True
    activation_type: ActivationType = "quint8"

    @property
    def label(self) -> str:
        text = f"{self.kind}, reduce_range={self.reduce_range}, per_channel={self.per_channel}"
        return text if self.kind == "dynamic" else f"{text}, activations={self.activation_type}"

    @property
    def slug(self) -> str:
        return f"{self.kind}-rr{int(self.reduce_range)}-pc{int(self.per_channel)}-{self.activation_type}"


def search_space(config: OrtAutoInt8Config) -> list[Candidate]:
    """Every combination ``config`` asks for, once each, in a stable order."""
    out: list[Candidate] = []
    for kind in dict.fromkeys(config.kinds):
        for rr in dict.fromkeys(config.reduce_range_options):
            if kind == "dynamic":
                out.append(Candidate("dynamic", rr))
                continue
            for pc in dict.fromkeys(config.per_channel_options):
                out += [Candidate("static", rr, pc, act) for act in dict.fromkeys(config.activation_type_options)]
    return out


def _time_ms(session: Any, name: str, batch: np.ndarray, repeats: int) -> float:
    for _ in range(5):
        session.run(None, {name: batch})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _agreement(session: Any, x: np.ndarray, ref: np.ndarray, min_agreement: float) -> tuple[float, float]:
    """Argmax agreement with the fp32 logits ``ref``: as parity checks judge it (near ties excused), and raw."""
    from slimtune.export.onnx import agreement_stats, effective_agreement, ort_predict

    stats = agreement_stats(ref, ort_predict(session, x))
    return effective_agreement(stats, min_agreement), float(stats["argmax_agreement"])


def _build(c: Candidate, src: Path, path: Path, config: OrtAutoInt8Config, calibration: torch.Tensor) -> None:
    if c.kind == "dynamic":
        dynamic = OrtDynamicInt8Config(reduce_range=c.reduce_range, exclude_layers=config.exclude_layers)
        quantize_dynamic_onnx(src, path, dynamic, None)
    else:
        static = OrtStaticInt8Config(
            reduce_range=c.reduce_range,
            per_channel=c.per_channel,
            activation_type=c.activation_type,
            exclude_layers=config.exclude_layers,
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
    x, threads = calibration.numpy(), torch.get_num_threads()
    fp32 = ort_session(src, threads=threads)
    name = fp32.get_inputs()[0].name
    ref = ort_predict(fp32, x)
    batch = np.concatenate([x] * -(-config.batch_size // len(x)))[: config.batch_size]
    fp32_ms = _time_ms(fp32, name, batch, config.repeats)
    rows: list[dict[str, Any]] = [{"candidate": "fp32", "kind": "fp32", "agreement": 1.0, "latency_ms": fp32_ms}]
    paths: dict[str, Path] = {}
    try:
        for c in search_space(config):
            row: dict[str, Any] = {"candidate": c.label, "kind": c.kind, "reduce_range": c.reduce_range,
                                   "per_channel": c.per_channel, "activation_type": c.activation_type}  # fmt: skip
            paths[c.label] = path = dst.with_name(f"{dst.stem}.{c.slug}.onnx")
            try:
                _build(c, src, path, config, calibration)
                session = ort_session(path, threads=threads)
                row["agreement"], row["raw_agreement"] = _agreement(session, x, ref, config.min_agreement)
                row["latency_ms"] = _time_ms(session, name, batch, config.repeats)
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
        chosen = min(close, key=lambda r: r["latency_ms"])
        shutil.copyfile(paths[chosen["candidate"]], dst)
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
    speedup = fp32_ms / chosen["latency_ms"]
    verdict = "" if speedup >= 1 else "; slower than fp32: no int8 variant pays off here"
    reason = (
        f"{chosen['candidate']}: fastest of the {len(close)} of {len(rows) - 1} int8 variants with ≥ "
        f"{config.min_agreement:.0%} argmax agreement with fp32 and within {RAW_SLACK:.0%} of the best raw "
        f"agreement (it has {chosen['agreement']:.2%}, raw {chosen['raw_agreement']:.2%}); "
        f"{speedup:.2f}× ORT fp32 ({chosen['latency_ms']:.3g} vs {fp32_ms:.3g} ms at batch {config.batch_size}) "
        f"on this CPU ({_cpu()}){verdict}"
    )
    keys = ("reduce_range", "per_channel", "activation_type")
    return {"chosen": chosen["candidate"], "reason": reason, **{k: chosen[k] for k in keys}, "candidates": rows}
