"""What a GGUF file holds — architecture and the quantization type of every tensor — read from its header
in a fraction of a second (``gguf.GGUFReader`` parses every tokenizer string into numpy views, which
takes seconds), so an unreadable file is refused with one line before transformers starts loading it.

GGUF (little-endian): magic ``GGUF``, version u32, tensor count u64, key/value count u64, the key/values
(key string, value type u32, value), then per tensor: name, n_dims u32, dims u64 × n, type u32, offset u64.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from slimtune.errors import DataError, missing_dependency

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Header:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.take("<I"), self.take("<Q")
            if etype in _SCALARS:  # skip numeric arrays without reading them
                self.pos += count * struct.calcsize(_SCALARS[etype])
                return None
            for _ in range(count):
                self.value(etype)
            return None
        if vtype not in _SCALARS:
            raise ValueError(f"unknown value type {vtype}")
        return self.take(_SCALARS[vtype])


def read_header(path: Path) -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    """Scalar/string metadata and ``(name, type id, elements)`` per tensor; a non-GGUF file → DataError."""
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise ValueError("no GGUF magic")
            h = _Header(buf)
            h.pos = 4
            version, n_tensors, n_kv = h.take("<I"), h.take("<Q"), h.take("<Q")
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version}")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = h.string()
                meta[key] = h.value(h.take("<I"))
            tensors = []
            for _ in range(n_tensors):
                name = h.string()
                dims = [h.take("<Q") for _ in range(h.take("<I"))]
                qtype = h.take("<I")
                h.take("<Q")  # data offset
                count = 1
                for d in dims:
                    count *= d
                tensors.append((name, qtype, count if len(dims) >= 2 else 0))
    except (OSError, ValueError, struct.error) as exc:
        raise DataError(f"'{path}' is not a readable GGUF file ({exc})") from None
    return meta, tensors


def gguf_info(path: str | Path) -> dict[str, Any]:
    """Architecture, main precision (type of most matrix elements) and tensor count per type; a tensor type
    the GGUF loader cannot dequantize, or an architecture transformers cannot load → one DataError line."""
    try:
        import gguf
        from gguf.quants import _type_traits  # the block types gguf can dequantize
    except ImportError as exc:
        raise missing_dependency("gguf", "lm") from exc
    p = Path(path)
    meta, tensors = read_header(p)
    readable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *_type_traits}
    counts: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    for name, type_id, matrix_elements in tensors:
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
        except ValueError:
            qtype = None
        if qtype not in readable:
            label = qtype.name if qtype is not None else f"type {type_id}"
            raise DataError(
                f"'{p.name}': tensor '{name}' is {label}, a quantization type the GGUF loader cannot read; "
                "re-quantize the file to Q8_0, Q4_K or F16 with llama.cpp's llama-quantize"
            )
        assert qtype is not None
        counts[qtype.name] += 1
        elements[qtype.name] += matrix_elements
    arch = str(meta.get("general.architecture", "?"))
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise DataError(
            f"'{p.name}' holds a '{arch}' model, which transformers' GGUF loader cannot read; "
            f"supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}"
        )
    ranked = [name for name, n in elements.most_common() if n > 0] or [name for name, _ in counts.most_common()]
    main = ranked[0] if ranked else "?"
    return {"architecture": arch, "precision": main, "tensor_types": dict(sorted(counts.items()))}
