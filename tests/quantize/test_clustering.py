from __future__ import annotations

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.prune import MagnitudePruneConfig, prunable_weights, prune_
from slimtune.quantize.clustering import (
    CentroidFineTune,
    ClusterConfig,
    _round,
    cluster_,
    clusters_from_weights,
    init_centroids,
    kmeans_1d,
)
from slimtune.train import LoopState, TrainConfig, fit


def _pruned_mlp(shape: tuple[int, ...] = (1, 8, 8), sparsity: float = 0.8) -> torch.nn.Module:
    model = build("lenet-300-100", input_shape=shape, num_classes=10)
    prune_(model, MagnitudePruneConfig(sparsity=sparsity))
    return model


def test_kmeans_finds_the_modes_of_a_bimodal_tensor() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(3000, generator=g) * 0.05 - 1.0, torch.randn(1000, generator=g) * 0.05 + 2.0])
    for init in ("linear", "density", "random"):
        cents, labels = kmeans_1d(values, 2, init=init)  # type: ignore[arg-type]
        assert cents.tolist() == pytest.approx([-1.0, 2.0], abs=0.01)
        assert torch.equal(labels, (values > 0.5).long())
    cents, labels = kmeans_1d(torch.tensor([-1.1, -1.0, -0.9, 1.9, 2.0, 2.1]), 2)
    assert cents.tolist() == pytest.approx([-1.0, 2.0]) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_kmeans_edge_cases() -> None:
    cents, labels = kmeans_1d(torch.tensor([0.5, 0.5, 0.5]), 4)  # fewer distinct values than clusters
    assert set(cents[labels].tolist()) == {0.5}
    cents, labels = kmeans_1d(torch.empty(0), 4)
    assert cents.shape == (4,) and labels.numel() == 0
    cents, _ = kmeans_1d(torch.linspace(-1, 1, 101), 5)
    assert torch.all(cents[1:] > cents[:-1])  # ascending


def test_inits() -> None:
    values = torch.tensor([3.0, -2.0, 0.5, 1.0, -0.25, 2.5])
    lin = init_centroids(values, 8, "linear")
    assert lin[0] == -2.0 and lin[-1] == 3.0 and torch.allclose(lin.diff(), torch.full((7,), 5 / 7, dtype=lin.dtype))
    dens = init_centroids(values, 3, "density")
    assert dens.tolist() == pytest.approx([-2.0, 0.75, 3.0])  # the CDF split evenly: min, median, max
    rnd = init_centroids(values, 4, "random", seed=1)
    assert set(rnd.tolist()) <= set(values.double().tolist()) and torch.equal(
        rnd, init_centroids(values, 4, "random", seed=1)
    )


def test_cluster_keeps_sparsity_and_bits() -> None:
    model = _pruned_mlp()
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    clusters = cluster_(model, ClusterConfig(bits=3, layer_bits={r"net\.5": 2}))
    for name, w in prunable_weights(model).items():
        assert torch.equal(w != 0, before[name] != 0), name  # the same zeros, no new ones
        distinct = torch.unique(w[w != 0]).numel()
        assert distinct <= (4 if name == "net.5" else 8), name
        assert torch.equal(w, clusters[name].dense()) and torch.equal(clusters[name].mask, w != 0)
        # every weight went to its nearest centroid
        near = (before[name][w != 0, None] - clusters[name].centroids[None]).abs().argmin(1)
        assert torch.equal(clusters[name].index[w != 0], near)
    derived = clusters_from_weights(model)
    assert all(torch.equal(derived[n].dense(), clusters[n].dense()) for n in clusters)


def test_cluster_exclude_and_half_precision() -> None:
    model = _pruned_mlp()
    kept = model.net[1].weight.detach().clone()
    clusters = cluster_(model, ClusterConfig(bits=4, exclude=(r"net\.1",), dtype="float16"))
    assert "net.1" not in clusters and torch.equal(model.net[1].weight, kept)
    for name in clusters:
        layer = model.get_submodule(name)
        for t in (layer.weight, layer.bias):
            assert torch.equal(t.half().float(), t), name  # representable in 16 bits: stored losslessly
        assert torch.equal(layer.weight != 0, clusters[name].mask)


def test_half_precision_never_rounds_a_centroid_to_zero() -> None:
    out = _round(torch.tensor([1e-9, -1e-9, 0.1], dtype=torch.float64), "float16")
    assert out[0] > 0 and out[1] < 0 and out[2] == torch.tensor(0.1).half().float()  # zero would mean "pruned"
    assert torch.equal(out.half().float(), out)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"bits": 0}, "bits must be an integer in 1..8"),
        ({"bits": 9}, "bits must be an integer in 1..8"),
        ({"layer_bits": {"net": 12}}, "layer_bits['net'] must be"),
        ({"init": "kmeans++"}, "'kmeans++' is not one of"),
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"exclude": ["("]}, "not a valid regular expression"),
    ],
)
def test_bad_config_one_liners(options: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict(options)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_pattern_matching_no_layer() -> None:
    with pytest.raises(ConfigError, match="matches no"):
        cluster_(_pruned_mlp(), ClusterConfig(layer_bits={"conv": 2}))
    with pytest.raises(ConfigError, match="matches no"):
        cluster_(_pruned_mlp(), ClusterConfig(exclude=("conv",)))


def test_gradients_are_summed_per_cluster() -> None:
    model = _pruned_mlp()
    clusters = cluster_(model, ClusterConfig(bits=2))
    cb = CentroidFineTune(clusters)
    state = LoopState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    cb.on_fit_start(state)
    model(torch.randn(16, 1, 8, 8)).logsumexp(1).sum().backward()
    raw = model.net[3].weight.grad.clone()
    cb.on_after_backward(state)
    index = clusters["net.3"].index
    for c in range(4):
        members = index == c
        expected = raw[members].double().sum().float()
        assert torch.allclose(model.net[3].weight.grad[members], expected.expand(int(members.sum())))
    assert torch.all(model.net[3].weight.grad[index < 0] == 0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_centroid_fine_tune_keeps_shared_values(digits: DataSplits, dtype: str) -> None:
    model = _pruned_mlp()
    fit(model, digits, config=TrainConfig(epochs=1, batch_size=64, lr=1e-3))  # an already-pruned model
    prune_(model, MagnitudePruneConfig(sparsity=0.8))
    config = ClusterConfig(bits=3, dtype=dtype)  # type: ignore[arg-type]
    clusters = cluster_(model, config)
    start = {n: c.centroids.clone() for n, c in clusters.items()}
    masks = {n: c.mask.clone() for n, c in clusters.items()}
    fit(model, digits, config=TrainConfig(epochs=1, batch_size=64, lr=1e-3), callbacks=[CentroidFineTune(clusters)])
    moved = 0.0
    for name, w in prunable_weights(model).items():
        assert torch.equal(w != 0, masks[name]), name  # zeros stay zero, no weight becomes zero
        assert torch.unique(w[w != 0]).numel() <= 2**config.bits
        assert torch.equal(w, clusters[name].dense())  # exactly the (fine-tuned) centroids
        moved += float((clusters[name].centroids - start[name]).abs().max())
        if dtype == "float16":
            assert torch.equal(w.half().float(), w)
    assert moved > 0  # the centroids were trained


def test_fine_tune_reads_clusters_from_the_model(digits: DataSplits) -> None:
    model = _pruned_mlp()
    cluster_(model, ClusterConfig(bits=2))
    callback = CentroidFineTune()
    fit(model, digits, config=TrainConfig(epochs=1, batch_size=128, restore_best=False), callbacks=[callback])
    assert callback.clusters is not None and set(callback.clusters) == {"net.1", "net.3", "net.5"}
    for w in prunable_weights(model).values():
        assert torch.unique(w[w != 0]).numel() <= 4
    with pytest.raises(ConfigError, match="reduce must be"):
        CentroidFineTune(reduce="max")  # type: ignore[arg-type]
