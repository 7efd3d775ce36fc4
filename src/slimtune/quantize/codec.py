"""Entropy coding of a pruned + clustered model into ONE file, the last stage of Deep Compression.

Each state-dict tensor is stored as the positions of its non-zeros plus their values. Positions: the gaps
between non-zeros (row-major, or with the first dim moved last, whichever codes smaller) as symbols
``0..M-1``, plus a *filler* symbol ``M`` = "skip M positions, no weight" for longer gaps (the paper's relative
index with filler, minus the filler's wasted weight); ``M = 2**b - 1``, b = 1..8, chosen per tensor to
minimise the size. Values: a codebook (the sorted distinct non-zeros, float16 when lossless) plus one index
per non-zero, or the raw values if smaller. Both symbol streams are Huffman coded with per-tensor canonical
codes (implemented here); a table holds a byte per symbol (0: unused, else code length + 1; a lone symbol
gets a 0-bit code). Layout, little-endian, no pickle: ``b"STDC"``, u8 format version, u32 length of a
zlib-compressed JSON header (the ``get_spec`` architecture + per-tensor layout), the body (per tensor: gap
table, gap bits, codebook, index table, index bits, raw bytes), a CRC-32 of all before it. Decoding gives
back the identical state dict, so outputs are bit-identical.
"""

from __future__ import annotations

import heapq
import json
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from slimtune._io import write_bytes
from slimtune.errors import ConfigError, DataError
from slimtune.models.registry import rebuild
from slimtune.models.serialization import get_spec, load_state
from slimtune.models.structure import describe, restore

MAGIC, FORMAT_VERSION = b"STDC", 1
_HEAD, _CRC = struct.Struct("<4sBI"), struct.Struct("<I")
PARTS = ("gap_table", "gap_bits", "codebook", "index_table", "index_bits", "raw")
CATEGORY = {"gap_table": "huffman_tables", "index_table": "huffman_tables", "gap_bits": "positions",
            "index_bits": "indices", "codebook": "codebooks", "raw": "other_params"}  # fmt: skip
MAX_GAPS = tuple(2**b - 1 for b in range(1, 9))
MAX_CODE_LEN = 56


def code_lengths(freqs: Sequence[int]) -> list[int]:
    """Huffman code length of each symbol (0 for unused symbols, and for a lone used symbol)."""
    lengths, tick = [0] * len(freqs), len(freqs)
    heap = [(int(f), s, [s]) for s, f in enumerate(freqs) if f > 0]
    heapq.heapify(heap)
    while len(heap) > 1:
        (f1, _, a), (f2, _, b) = heapq.heappop(heap), heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, tick, a + b))
        tick += 1
    return lengths


def canonical_codes(lengths: Sequence[int]) -> list[int]:
    """Canonical codes: by (length, symbol), each code the previous + 1, shifted to its length."""
    codes, code, prev = [0] * len(lengths), 0, 0
    for length, s in sorted((n, s) for s, n in enumerate(lengths) if n > 0):
        code <<= length - prev
        codes[s], code, prev = code, code + 1, length
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int) -> tuple[bytes, bytes, int]:
    """(table, bitstream, number of bits) of ``symbols`` (ints in ``0..alphabet-1``)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    freqs = np.bincount(symbols, minlength=alphabet)
    lengths, size = code_lengths(freqs.tolist()), int(np.flatnonzero(freqs).max(initial=-1)) + 1
    table = bytes(lengths[s] + 1 if freqs[s] else 0 for s in range(size))
    lens = np.asarray(lengths, dtype=np.int64)[symbols]
    if (total := int(lens.sum())) == 0:
        return table, b"", 0
    codes = np.asarray(canonical_codes(lengths), dtype=np.int64)[symbols]
    owner = np.repeat(np.arange(symbols.size), lens)
    offset = np.arange(total) - (np.cumsum(lens) - lens)[owner]
    bits = (codes[owner] >> (lens[owner] - 1 - offset)) & 1
    return table, np.packbits(bits.astype(np.uint8)).tobytes(), total


def huffman_decode(table: bytes, data: bytes, nbits: int, count: int) -> np.ndarray:
    """Decode ``count`` symbols; ValueError on any inconsistency (bad table, short or long stream)."""
    used = [(t - 1, s) for s, t in enumerate(table) if t]
    if count == 0 or (len(used) == 1 and used[0][0] == 0):
        if nbits or (count and len(used) != 1):
            raise ValueError("bitstream does not match its code table")
        return np.full(count, used[0][1] if used else 0, dtype=np.int64)
    lengths = [n for n, _ in used]
    top = max(lengths, default=0)
    if len(used) < 2 or min(lengths) < 1 or top > MAX_CODE_LEN or sum(1 << (top - n) for n in lengths) != 1 << top:
        raise ValueError("code table is not a complete prefix code")
    raw = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if raw.size < nbits or len(data) != (nbits + 7) // 8:
        raise ValueError(f"bitstream holds {raw.size} bits, header says {nbits}")
    bits = np.concatenate([raw[:nbits], np.zeros(top, dtype=np.uint8)]).astype(np.int64)
    window = np.zeros(nbits, dtype=np.int64)
    for j in range(top):
        window = (window << 1) | bits[j : j + nbits]
    ordered = sorted(used)  # canonical order: the left-aligned codes are increasing and tile [0, 2**top)
    codes = canonical_codes([n for n, _ in ordered])
    starts = np.asarray([c << (top - n) for (n, _), c in zip(ordered, codes)], dtype=np.int64)
    k = np.searchsorted(starts, window, side="right") - 1
    sym_at = np.asarray([s for _, s in ordered])[k].tolist()
    len_at = np.asarray([n for n, _ in ordered])[k].tolist()
    out, pos = [0] * count, 0
    for i in range(count):
        if pos >= nbits:
            raise ValueError("bitstream ends early")
        out[i] = sym_at[pos]
        pos += len_at[pos]
    if pos != nbits:
        raise ValueError("bitstream has trailing bits")
    return np.asarray(out, dtype=np.int64)


def gap_symbols(positions: np.ndarray, max_gap: int) -> np.ndarray:
    """Gaps before each position as symbols < ``max_gap``, preceded by one filler (``max_gap``) per
    ``max_gap`` skipped positions."""
    gaps = _gaps(positions)
    reps = gaps // max_gap + 1
    out = np.full(int(reps.sum()), max_gap, dtype=np.int64)
    out[np.cumsum(reps) - 1] = gaps % max_gap
    return out


def _gaps(positions: np.ndarray) -> npt.NDArray[np.int64]:
    p = np.concatenate([np.asarray([-1]), np.asarray(positions)]).astype(np.int64)
    return p[1:] - p[:-1] - 1


def gap_positions(symbols: np.ndarray, max_gap: int) -> np.ndarray:
    step = np.where(symbols == max_gap, max_gap, symbols + 1)
    return (np.cumsum(step) - 1)[symbols != max_gap]


def _best_gap(positions: np.ndarray) -> tuple[int, int]:
    """(coded bytes, M) of the cheapest filler bound for the gaps between these positions."""
    gaps, costs = _gaps(positions), []
    for m in MAX_GAPS:
        freqs = np.bincount(gaps % m, minlength=m + 1)
        freqs[m] += int((gaps // m).sum())
        bits = int((np.asarray(code_lengths(freqs.tolist())) * freqs).sum())
        costs.append(((bits + 7) // 8 + int(np.flatnonzero(freqs).max(initial=-1)) + 1, m))
    return min(costs)


def _encode(name: str, t: torch.Tensor) -> tuple[dict[str, Any], list[bytes]]:
    entry: dict[str, Any] = {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
    parts = dict.fromkeys(PARTS, b"")
    if not t.is_floating_point():
        entry["kind"], parts["raw"] = "bytes", _bytes(t)
        return entry, [parts[p] for p in PARTS]
    views, best = ([t, t.movedim(0, -1)] if t.ndim >= 2 else [t]), []  # row-major, or first dim moved last
    for order, view in enumerate(views):
        positions = torch.nonzero(view.flatten() != 0).flatten().numpy()
        best.append((*_best_gap(positions), order, positions))
    _, m, order, positions = min(best, key=lambda b: b[:3])
    values = views[order].flatten()[torch.from_numpy(positions)]
    symbols = gap_symbols(positions, m)
    parts["gap_table"], parts["gap_bits"], gap_nbits = huffman_encode(symbols, m + 1)
    entry.update(kind="sparse", nnz=len(positions), order=order, max_gap=m, gap_count=len(symbols))
    entry.update(gap_nbits=gap_nbits, values="raw", vdtype=_lossless_dtype(values))
    raw = _bytes(values.to(getattr(torch, entry["vdtype"])))
    cents = torch.unique(values) if bool(torch.isfinite(values).all()) else values[:0]
    if 0 < cents.numel() <= 2**8:
        index = torch.searchsorted(cents, values).numpy()
        cdtype = _lossless_dtype(cents)
        book = _bytes(cents.to(getattr(torch, cdtype)))
        table, bits, nbits = huffman_encode(index, cents.numel())
        if len(book) + len(table) + len(bits) < len(raw):
            entry.update(values="codebook", vdtype=cdtype, index_nbits=nbits)
            parts.update(codebook=book, index_table=table, index_bits=bits)
            raw = b""
    parts["raw"] = raw
    return entry, [parts[p] for p in PARTS]


def _bytes(t: torch.Tensor) -> bytes:
    return t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def _lossless_dtype(values: torch.Tensor) -> str:
    if values.dtype == torch.float16 or torch.equal(values.half().to(values.dtype), values):
        return "float16"
    return str(values.dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    if not isinstance(dtype := getattr(torch, str(name), None), torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _tensor(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype) if data else torch.empty(0, dtype=dtype)


def _decode(entry: dict[str, Any], parts: dict[str, bytes]) -> torch.Tensor:
    dtype, shape = _dtype(entry["dtype"]), tuple(int(s) for s in entry["shape"])
    if entry["kind"] == "bytes":
        return _tensor(parts["raw"], dtype).reshape(shape).clone()
    m, nnz = int(entry["max_gap"]), int(entry["nnz"])
    symbols = huffman_decode(parts["gap_table"], parts["gap_bits"], int(entry["gap_nbits"]), int(entry["gap_count"]))
    positions = gap_positions(symbols, m)
    numel = int(np.prod(shape))
    if len(positions) != nnz or (nnz and (positions[-1] >= numel or symbols.max() > m)):
        raise ValueError(f"positions of '{entry['name']}' do not fit its shape {list(shape)}")
    vdtype = _dtype(entry["vdtype"])
    if entry["values"] == "codebook":
        book = _tensor(parts["codebook"], vdtype)
        index = huffman_decode(parts["index_table"], parts["index_bits"], int(entry["index_nbits"]), nnz)
        values = book.to(dtype)[torch.from_numpy(index)]
    else:
        values = _tensor(parts["raw"], vdtype).to(dtype)
    flat = torch.zeros(numel, dtype=dtype)
    flat[torch.from_numpy(positions)] = values
    return flat.view(shape[1:] + shape[:1]).movedim(-1, 0).contiguous() if entry["order"] == 1 else flat.view(shape)


def save_compressed(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` (spec + entropy-coded state dict) to one file, atomically; returns the path."""
    spec, layers = dict(get_spec(model)), describe(model)
    try:  # the layers are only needed when they differ from a fresh build (e.g. after structured pruning)
        with torch.random.fork_rng(devices=[]):
            fresh = describe(rebuild(spec))
    except Exception:
        fresh = None
    if fresh != layers:
        spec["layers"] = layers
    entries, body = [], []
    for name, tensor in model.state_dict().items():
        entry, parts = _encode(name, tensor.detach().cpu())
        entry["sizes"] = [len(p) for p in parts]
        entries.append(entry)
        body += parts
    header = zlib.compress(json.dumps({"spec": spec, "tensors": entries}, separators=(",", ":")).encode(), 9)
    data = _HEAD.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(body)
    write_bytes(path, data + _CRC.pack(zlib.crc32(data)))
    return Path(path)


def _read(path: str | Path) -> tuple[dict[str, Any], bytes, int]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"compressed model not found: {p}")
    data = p.read_bytes()
    if len(data) < _HEAD.size + _CRC.size or data[:4] != MAGIC:
        raise DataError(f"'{p}' is not a slimtune compressed model (bad magic or truncated)")
    _, version, size = _HEAD.unpack_from(data)
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"'{p}' was written by a newer slimtune (compressed format {version} > {FORMAT_VERSION}); upgrade slimtune"
        )
    if zlib.crc32(data[: -_CRC.size]) != _CRC.unpack(data[-_CRC.size :])[0]:
        raise DataError(f"'{p}' is corrupted or truncated (checksum mismatch); write it again with save_compressed")
    try:
        header = json.loads(zlib.decompress(data[_HEAD.size : _HEAD.size + size]))
    except (zlib.error, ValueError) as exc:
        raise DataError(f"'{p}' has an unreadable header ({exc})") from None
    return header, data[_HEAD.size + size : -_CRC.size], len(data)


def load_compressed(path: str | Path) -> nn.Module:
    """Rebuild the architecture and decode the weights written by ``save_compressed``."""
    header, body, _ = _read(path)
    try:
        spec = header["spec"]
        model = rebuild(spec)
        restore(model, spec.get("layers", {}))
        state, at = {}, 0
        for entry in header["tensors"]:
            parts = {}
            for part, size in zip(PARTS, entry["sizes"], strict=True):
                parts[part], at = body[at : at + int(size)], at + int(size)
            state[entry["name"]] = _decode(entry, parts)
        if at != len(body):
            raise ValueError(f"{len(body) - at} unexplained bytes after the last tensor")
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        if isinstance(exc, DataError | ConfigError):
            raise
        raise DataError(f"'{path}' is corrupted: {type(exc).__name__}: {exc}") from None
    load_state(model, state, source=str(path))
    return model


def compressed_breakdown(path: str | Path) -> dict[str, int]:
    """Bytes of a compressed file by part: indices, positions, huffman_tables, codebooks, other_params
    (raw values: biases, unclustered tensors), header (magic, version, JSON, checksum) and total."""
    header, _, total = _read(path)
    out = dict.fromkeys(["indices", "positions", "huffman_tables", "codebooks", "other_params"], 0)
    for entry in header["tensors"]:
        for part, size in zip(PARTS, entry["sizes"]):
            out[CATEGORY[part]] += int(size)
    out["header"], out["total"] = total - sum(out.values()), total
    return out
