"""What every benchmark JSON records beside its numbers: the commit (and whether the tree was dirty), the
settings it ran with, the machine (CPU model, cores, package versions) and the load average before and after.

    prov = Provenance(settings={"threads": 2, "rounds": 5})   # at the start of the run
    result["provenance"] = prov.finish()                       # at the end: adds the closing load and wall time
    md_lines.append(line(result["provenance"]))                # the table's header line
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=BENCH, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def commit() -> str:
    return _git("rev-parse", "HEAD") or "unknown"


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return names[0] if names else None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("slimtune", "torch", "onnxruntime", "onnx", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _dirty() -> bool:
    """Code changed and not committed (result files being rewritten by runs do not count)."""
    exclude = ":(top,exclude)benchmarks/results"
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", exclude))


class Provenance:
    """Started at the beginning of a run; :meth:`finish` returns the record for the result JSON."""

    def __init__(self, *, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)
        self.started = time.perf_counter()
        self.load_before = _load()
        self.date = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def finish(self) -> dict[str, Any]:
        return {
            "commit": commit(),
            "dirty": _dirty(),
            "date": self.date,
            "settings": self.settings,
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "versions": _versions(),
            "load_average_before": self.load_before,  # 1, 5, 15 minutes
            "load_average_after": _load(),
            "wall_seconds": round(time.perf_counter() - self.started, 1),
        }


def line(record: dict[str, Any] | None) -> str:
    """One Markdown line naming the commit, the load and the wall time (for a table's header); "" without one."""
    if not record:
        return ""
    before = record["load_average_before"][0] if record["load_average_before"] else float("nan")
    after = record["load_average_after"][0] if record["load_average_after"] else float("nan")
    dirty = " (uncommitted changes)" if record["dirty"] else ""
    return (
        f"Commit {record['commit'][:7]}{dirty}, {record['date']}, {record['cpu_count']} CPUs ({record['cpu_model']}), "
        f"load average {before:.2f} → {after:.2f}, {record['wall_seconds']:.0f} s."
    )
