from __future__ import annotations

import itertools
import json
import math
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from slimtune._io import path_bytes
from slimtune.errors import ConfigError, DataError
from slimtune.models import build, save_model
from slimtune.prune import MagnitudePruneConfig, prune_
from slimtune.quantize.clustering import ClusterConfig, cluster_
from slimtune.quantize.codec import (
    FORMAT_VERSION,
    canonical_codes,
    code_lengths,
    compressed_breakdown,
    gap_positions,
    gap_symbols,
    huffman_decode,
    huffman_encode,
    load_compressed,
    save_compressed,
)

STREAMS = {
    "uniform": lambda rng: rng.integers(0, 16, 5000),
    "skewed": lambda rng: np.minimum(rng.geometric(0.3, 4000) - 1, 40),
    "two": lambda rng: rng.integers(0, 2, 333),
    "sparse-alphabet": lambda rng: rng.choice([3, 200, 255], 1000, p=[0.9, 0.09, 0.01]),
    "single": lambda rng: np.full(777, 5),
    "one": lambda rng: np.array([9]),
    "empty": lambda rng: np.zeros(0, dtype=np.int64),
}


@pytest.mark.parametrize("kind", list(STREAMS))
@pytest.mark.parametrize("seed", [0, 1])
def test_huffman_round_trip(kind: str, seed: int) -> None:
    symbols = STREAMS[kind](np.random.default_rng(seed))
    table, data, nbits = huffman_encode(symbols, 256)
    assert len(data) == (nbits + 7) // 8
    assert np.array_equal(huffman_decode(table, data, nbits, len(symbols)), symbols)
    if len(np.unique(symbols)) <= 1:
        assert nbits == 0 and data == b""  # a lone symbol costs no bits at all (its count is in the header)


@pytest.mark.parametrize("seed", range(5))
def test_code_lengths_are_optimal_complete_and_prefix_free(seed: int) -> None:
    rng = np.random.default_rng(seed)
    freqs = [int(f) for f in rng.integers(0, 1000, 40) * (rng.random(40) < 0.7)]
    lengths = code_lengths(freqs)
    used = [s for s, f in enumerate(freqs) if f]
    assert all(lengths[s] == 0 for s, f in enumerate(freqs) if not f)
    assert sum(Fraction(1, 2 ** lengths[s]) for s in used) == 1  # Kraft equality: a complete code
    total = sum(freqs)
    entropy = -sum(f / total * math.log2(f / total) for f in freqs if f)
    average = sum(f * n for f, n in zip(freqs, lengths)) / total
    assert entropy <= average < entropy + 1
    codes = canonical_codes(lengths)
    words = [format(codes[s], f"0{lengths[s]}b") for s in used]
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    by_order = sorted(used, key=lambda s: (lengths[s], s))  # canonical: increasing within and across lengths
    assert all(codes[a] << (lengths[b] - lengths[a]) < codes[b] for a, b in itertools.pairwise(by_order))


def test_code_length_edge_cases() -> None:
    assert code_lengths([]) == [] and code_lengths([0, 0]) == [0, 0]
    assert code_lengths([0, 7, 0]) == [0, 0, 0]  # a lone symbol: 0-bit code, Kraft sum 2**0 = 1
    assert code_lengths([1, 1]) == [1, 1] and code_lengths([1, 1, 2]) == [2, 2, 1]


def test_decoder_rejects_bad_streams() -> None:
    table, data, nbits = huffman_encode(np.array([0, 1, 2, 2, 1, 2]), 3)
    with pytest.raises(ValueError, match="bitstream"):
        huffman_decode(table, data[:-1], nbits, 6)
    with pytest.raises(ValueError, match="bitstream"):
        huffman_decode(table, data, nbits, 5)
    with pytest.raises(ValueError, match="complete prefix code"):
        huffman_decode(bytes([2, 3]), data, nbits, 6)  # lengths 1 and 2: Kraft sum 3/4


@pytest.mark.parametrize("max_gap", [1, 3, 31, 255])
def test_gap_code_round_trip(max_gap: int) -> None:
    rng = np.random.default_rng(max_gap)
    positions = np.unique(rng.integers(0, 100_000, 700))
    positions = np.concatenate([[0, 1, 2], positions + 3, [200_000]])  # adjacent, random, one huge gap
    symbols = gap_symbols(positions, max_gap)
    assert symbols.max() <= max_gap and np.array_equal(gap_positions(symbols, max_gap), positions)
    assert len(gap_positions(gap_symbols(np.zeros(0, dtype=np.int64), max_gap), max_gap)) == 0


def _deep_compressed(sparsity: float = 0.9, bits: int = 4) -> torch.nn.Module:
    model = build("lenet-300-100", input_shape=(1, 28, 28), num_classes=10)
    prune_(model, MagnitudePruneConfig(sparsity=sparsity))
    cluster_(model, ClusterConfig(bits=bits))
    return model


def test_round_trip_is_exact_and_small(tmp_path: Path) -> None:
    dense_bytes = path_bytes(
        save_model(build("lenet-300-100", input_shape=(1, 28, 28), num_classes=10), tmp_path / "d")
    )
    model = _deep_compressed()
    rng = torch.random.get_rng_state()
    path = save_compressed(model, tmp_path / "m.stdc")
    assert torch.equal(torch.random.get_rng_state(), rng)  # saving leaves the global RNG alone
    loaded = load_compressed(path)
    x = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    parts = compressed_breakdown(path)
    assert parts["total"] == path_bytes(path) == sum(v for k, v in parts.items() if k != "total")
    assert parts["other_params"] == 4 * (300 + 100 + 10)  # the fp32 biases
    assert parts["codebooks"] <= 3 * 16 * 4 and parts["indices"] > 0 and parts["positions"] > 0
    # 90% sparsity + 4 bits: measured 48x smaller than the dense fp32 save_model (requirement: 20x)
    assert dense_bytes / parts["total"] >= 30, parts


def test_round_trip_of_other_tensors(tmp_path: Path) -> None:
    """Dense weights (raw values), BatchNorm buffers (int64 counter, zero biases), half-precision codebooks."""
    model = build("resnet-small", input_shape=(3, 8, 8), num_classes=4, widths=(4, 8), blocks=1)
    model.train()(torch.randn(8, 3, 8, 8))  # non-trivial running stats
    model.eval()
    prune_(model, MagnitudePruneConfig(sparsity=0.5, exclude=("fc",)))
    cluster_(model, ClusterConfig(bits=2, exclude=("fc", "stem"), dtype="float16"))
    loaded = load_compressed(save_compressed(model, tmp_path / "r.stdc")).eval()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_round_trip_of_a_reshaped_model(tmp_path: Path) -> None:
    """Layers that differ from a fresh build (as after structured pruning) are recorded and restored."""
    model = build("lenet-300-100", input_shape=(1, 8, 8), num_classes=10)
    model.net[1], model.net[3] = torch.nn.Linear(64, 120), torch.nn.Linear(120, 100)
    loaded = load_compressed(save_compressed(model, tmp_path / "s.stdc"))
    assert loaded.net[1].out_features == 120
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def _rewrite(path: Path, version: int | None = None, edit: object = None) -> None:
    """Re-pack a file with another version byte or an edited JSON header, with a valid checksum."""
    data = path.read_bytes()
    magic, old_version, size = struct.unpack_from("<4sBI", data)
    header = json.loads(zlib.decompress(data[9 : 9 + size]))
    if callable(edit):
        edit(header)
    packed = zlib.compress(json.dumps(header).encode())
    out = struct.pack("<4sBI", magic, old_version if version is None else version, len(packed)) + packed
    out += data[9 + size : -4]
    path.write_bytes(out + struct.pack("<I", zlib.crc32(out)))


def test_bad_files_fail_with_one_line_naming_the_file(tmp_path: Path) -> None:
    model = build("lenet-300-100", input_shape=(1, 8, 8), num_classes=10)
    prune_(model, MagnitudePruneConfig(sparsity=0.9))
    cluster_(model, ClusterConfig(bits=2))
    good = save_compressed(model, tmp_path / "good.stdc").read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "flipped": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
        "empty": b"",
        "not ours": b"PK\x03\x04" + good[4:],
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.stdc"
        path.write_bytes(data)
        with pytest.raises(DataError) as info:
            load_compressed(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
    with pytest.raises(DataError, match="not found"):
        load_compressed(tmp_path / "missing.stdc")
    inconsistent = tmp_path / "inconsistent.stdc"
    inconsistent.write_bytes(good)
    _rewrite(inconsistent, edit=lambda h: h["tensors"][0].update(nnz=h["tensors"][0]["nnz"] + 1))
    with pytest.raises(DataError, match="corrupted"):
        load_compressed(inconsistent)
    newer = tmp_path / "newer.stdc"
    newer.write_bytes(good)
    _rewrite(newer, version=FORMAT_VERSION + 1)
    with pytest.raises(ConfigError, match="newer slimtune"):
        load_compressed(newer)
