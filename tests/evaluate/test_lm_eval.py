"""LM measurement on tiny models: perplexity against a hand computation (whole windows and strided
streams), next-token agreement, the KV-cache greedy loop and the speed/size helpers."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from slimtune.data.core import Split
from slimtune.errors import ConfigError
from slimtune.evaluate.lm import disk_bytes, generation_speed, greedy_decode, perplexity, token_agreement
from slimtune.models import load_lm

STREAM = torch.tensor([72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 256])


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return load_lm("tiny-llama")


def log_probs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids[None]).logits[0].double(), dim=-1)


def test_perplexity_is_exp_of_mean_nll_by_hand(llama: torch.nn.Module) -> None:
    lp = log_probs(llama, STREAM)
    nll = -torch.stack([lp[t - 1, STREAM[t]] for t in range(1, len(STREAM))]).mean()
    got = perplexity(llama, STREAM, window=len(STREAM))
    assert got["tokens"] == len(STREAM) - 1
    assert got["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-5)
    as_window = perplexity(llama, STREAM[None])  # one LM window, labels = ids
    assert as_window["perplexity"] == pytest.approx(got["perplexity"], rel=1e-5)


def test_masked_labels_are_not_scored(llama: torch.nn.Module) -> None:
    y = STREAM.clone()
    y[:6] = -100  # a masked prompt: only positions 6.. are learned
    lp = log_probs(llama, STREAM)
    nll = -torch.stack([lp[t - 1, STREAM[t]] for t in range(6, len(STREAM))]).mean()
    got = perplexity(llama, Split(STREAM[None], y[None]))
    assert got["tokens"] == len(STREAM) - 6
    assert got["nll"] == pytest.approx(float(nll), rel=1e-5)


def test_stride_scores_every_token_once_with_the_right_context(llama: torch.nn.Module) -> None:
    window, stride = 6, 2
    expected = []  # token t is scored in the first window [b, b + 6) that reaches it, b a multiple of 2
    begin, prev_end = 0, 0
    while True:
        end = min(begin + window, len(STREAM))
        lp = log_probs(llama, STREAM[begin:end])
        expected += [lp[t - begin - 1, STREAM[t]] for t in range(max(prev_end, begin + 1), end)]
        if end == len(STREAM):
            break
        begin, prev_end = begin + stride, end
    got = perplexity(llama, STREAM, window=window, stride=stride)
    assert got["tokens"] == len(STREAM) - 1 == len(expected)
    assert got["nll"] == pytest.approx(-float(torch.stack(expected).mean()), rel=1e-5)
    disjoint = perplexity(llama, STREAM, window=window)  # stride = window: less context, a different value
    assert disjoint["tokens"] < got["tokens"] and disjoint["nll"] != pytest.approx(got["nll"], rel=1e-6)
    with pytest.raises(ConfigError, match="stride"):
        perplexity(llama, STREAM, window=4, stride=5)


def test_agreement_is_one_with_itself_and_matches_a_hand_count(llama: torch.nn.Module) -> None:
    windows = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    assert token_agreement(llama, llama, windows) == 1.0
    other = copy.deepcopy(llama)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
        a = llama(input_ids=windows).logits[:, :-1].argmax(-1)
        b = other(input_ids=windows).logits[:, :-1].argmax(-1)
    labels = windows.clone()
    labels[:, :4] = -100  # positions predicting masked labels do not count
    expected = float((a == b)[:, 3:].float().mean())
    assert 0.0 < expected < 1.0
    assert token_agreement(llama, other, Split(windows, labels)) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_kv_cache_greedy_matches_full_recompute(name: str) -> None:
    model = load_lm(name)
    prompt = STREAM[None, :5].repeat(2, 1)
    with torch.inference_mode():
        tokens, _, _ = greedy_decode(model, prompt, 6)
        ids = prompt
        for _ in range(6):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, ids[:, 5:])


def test_speed_and_size_helpers_report_positive_numbers(llama: torch.nn.Module) -> None:
    speed = generation_speed(llama, prompt_tokens=8, new_tokens=4, batch_sizes=(1, 2), repeats=1, warmup=0)
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms"):
        assert set(speed[key]) == {"batch1", "batch2"} and all(v > 0 for v in speed[key].values())
    assert speed["peak_rss_mib"] > 0
    params = sum(p.numel() for p in llama.parameters())  # tied: the embedding once
    assert disk_bytes(llama) > 4 * params


def test_lm_report_shows_perplexity_and_decode_speed(llama: torch.nn.Module, tmp_path: Path) -> None:
    from slimtune.data import load_text
    from slimtune.data.corpus import Corpus, Document
    from slimtune.evaluate import Report
    from slimtune.evaluate.report_lm import LM_HEADERS, measure_lm_row

    docs = [Document(f"d{i}", f"to be or not to be, line {i}. " * 4) for i in range(10)]
    data = load_text(Corpus("toy", docs), llama, window=32)
    small = copy.deepcopy(llama)
    del small.model.layers[1]
    base = measure_lm_row("fp32", llama, data)
    row = measure_lm_row("one layer", small, data, reference=llama)
    assert base.metrics["perplexity"] == pytest.approx(perplexity(llama, data.test)["perplexity"])
    assert 0 < row.metrics["token_agreement"] <= 1 and row.macs < base.macs
    assert base.throughput is not None and base.throughput["decode_batch8"] > 0
    report = Report(rows=[base, row])
    table = report.table()
    assert table.splitlines()[0] == "| " + " | ".join(LM_HEADERS) + " |"
    assert f"{base.metrics['perplexity']:.4g}" in table and "Accuracy" not in table
    html = report.html()
    assert "Perplexity vs size on disk" in html and "Perplexity vs decode latency" in html
    report.write(tmp_path)
    again = Report.load(tmp_path)
    assert again.table() == table
