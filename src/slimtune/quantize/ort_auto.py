"""Pick the int8 settings by measurement on this CPU instead of hard-coding them.

Candidates (dynamic or static, ``reduce_range`` on or off) are each built, run in ONNX Runtime on
calibration inputs, compared with the fp32 graph (argmax agreement), and timed; the fastest one that
keeps agreement ≥ ``min_agreement`` wins. The table of candidates goes into the report, so the reason
for the choice is visible (e.g. on CPUs without VNNI, full-range int8 can saturate).
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slimtune.config import Config, check
from slimtune.errors import ParityError
from slimtune.quantize.api import register_quantizer
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx
from slimtune.quantize.ort_static import OrtStaticInt8Config, quantize_static_onnx

Kind = Literal["dynamic", "static"]


@dataclass(frozen=True, kw_only=True)
class OrtAutoInt8Config(Config):
    kinds: tuple[Kind, ...] = ("dynamic", "static")
    min_agreement: float = 0.99
    batch_size: int = 8
    repeats: int = 30
    exclude_layers: tuple[str, ...] = ()  # torch layer names kept fp32 in every candidate

    def __post_init__(self) -> None:
        check(bool(self.kinds), "kinds must name at least one of dynamic, static")
        check(0 < self.min_agreement <= 1, f"min_agreement must be in (0, 1], got {self.min_agreement}")
        check(self.batch_size >= 1 and self.repeats >= 1, "batch_size and repeats must be >= 1")


def _time_ms(session: Any, name: str, batch: np.ndarray, repeats: int) -> float:
    for _ in range(5):
        session.run(None, {name: batch})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@register_quantizer(
    "ort-auto-int8", OrtAutoInt8Config, help="measure int8 variants here, keep the fastest faithful one"
)
def quantize_auto_onnx(
    src: Path, dst: Path, config: OrtAutoInt8Config, calibration: torch.Tensor | None
) -> dict[str, Any]:
    from slimtune.export.onnx import ort_predict, ort_session

    if calibration is None or len(calibration) == 0:
        raise ParityError("ort-auto-int8 needs calibration inputs to compare candidates; pass calibration examples")
    x = calibration.numpy()
    fp32 = ort_session(src, threads=torch.get_num_threads())
    name = fp32.get_inputs()[0].name
    ref = ort_predict(fp32, x).argmax(1)
    batch = np.concatenate([x] * -(-config.batch_size // len(x)))[: config.batch_size]
    rows: list[dict[str, Any]] = [
        {"candidate": "fp32", "agreement": 1.0, "latency_ms": _time_ms(fp32, name, batch, config.repeats)}
    ]
    for kind in config.kinds:
        for reduce_range in (False, True):
            path = dst.with_name(f"{dst.stem}.{kind}-rr{int(reduce_range)}.onnx")
            if kind == "dynamic":
                dynamic = OrtDynamicInt8Config(reduce_range=reduce_range, exclude_layers=config.exclude_layers)
                quantize_dynamic_onnx(src, path, dynamic, None)
            else:
                static = OrtStaticInt8Config(reduce_range=reduce_range, exclude_layers=config.exclude_layers)
                quantize_static_onnx(src, path, static, calibration)
            session = ort_session(path, threads=torch.get_num_threads())
            agreement = float((ort_predict(session, x).argmax(1) == ref).mean())
            latency = _time_ms(session, name, batch, config.repeats)
            rows.append({"candidate": f"{kind}, reduce_range={reduce_range}", "agreement": agreement,
                         "latency_ms": latency, "path": path})  # fmt: skip
    ok = [r for r in rows[1:] if r["agreement"] >= config.min_agreement]
    if not ok:
        best = max(rows[1:], key=lambda r: r["agreement"])
        raise ParityError(
            f"no int8 variant agrees with fp32 on ≥ {config.min_agreement:.0%} of calibration inputs "
            f"(best: {best['candidate']} at {best['agreement']:.2%}); keep this model in fp32 or exclude layers"
        )
    chosen = min(ok, key=lambda r: r["latency_ms"])
    shutil.copyfile(chosen["path"], dst)
    for r in rows[1:]:
        Path(r.pop("path")).unlink(missing_ok=True)
    speedup = rows[0]["latency_ms"] / chosen["latency_ms"]
    return {
        "chosen": chosen["candidate"],
        "reason": f"fastest variant with ≥ {config.min_agreement:.0%} agreement; {speedup:.2f}× ORT fp32 "
        f"at batch {config.batch_size} on this CPU",
        "reduce_range": "reduce_range=True" in chosen["candidate"],
        "candidates": rows,
    }
