"""Environment facts for bug reports and for choosing int8 settings: versions, threads, CPU int8 features."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def nchwc_block() -> int:
    """Channels per vector block of ONNX Runtime's NCHWc convolutions on this CPU: 16 with AVX-512, 8 with
    AVX/AVX2, 1 elsewhere (no NCHWc path). A convolution whose output channels are not a multiple of it
    falls back to the slower im2col path and costs reorders around it."""
    flags = cpu_flags()
    if "avx512f" in flags:
        return 16
    return 8 if {"avx2", "avx"} & flags else 1


def int8_capability() -> dict[str, Any]:
    flags = cpu_flags()
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    info: dict[str, Any] = {"avx2": "avx2" in flags, "avx512": "avx512f" in flags, "vnni": vnni}
    if vnni:
        note = "VNNI present: int8 matmuls run natively; expect roughly 2-4x over fp32 on large layers."
    elif info["avx2"]:
        note = (
            "AVX2 without VNNI: int8 uses u8*s8 pairs that can saturate, so reduce_range is advised for accuracy; "
            "expect ~1.1-1.9x over fp32 on big matmuls, none on tiny models."
        )
    else:
        note = "no AVX2: int8 kernels fall back to slow paths; expect little or no int8 speedup."
    info["note"] = note
    return info


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect(*, with_torch: bool = True) -> dict[str, Any]:
    """Everything a bug report needs. ``with_torch=False`` avoids importing torch (fast CLI)."""
    pkgs = [
        "slimtune",
        "torch",
        "numpy",
        "onnx",
        "onnxruntime",
        "transformers",
        "scikit-learn",
        "safetensors",
    ]
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in pkgs},
        "int8": int8_capability(),
    }
    if with_torch:
        import torch

        from slimtune import threads

        out["torch_threads"] = torch.get_num_threads()
        out["threads"] = threads.current()  # the setting and where it came from (--threads, auto, OMP_NUM_THREADS)
    return out
