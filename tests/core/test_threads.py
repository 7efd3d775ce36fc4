"""Threads: a validated --threads on every command that trains or measures, a default that leaves busy and
spare cores alone, and the setting recorded in the report's environment."""

from __future__ import annotations

import pytest
import torch

from slimtune import env, threads
from slimtune.errors import ConfigError


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.0, 1), (2, 1.3, 1), (1, 0.0, 1), (8, 0.0, 4), (8, 5.6, 2), (16, 40.0, 1), (16, None, 8)],
)
def test_auto_threads_leaves_half_the_cores_and_the_busy_ones(cores: int, load: float | None, expected: int) -> None:
    assert threads.auto_threads(cores=cores, load=load) == expected


@pytest.mark.parametrize("bad", ["-1", "0", -1, 0, "two", "1.5", 1.5, True, "", None])
def test_bad_thread_counts_are_one_line_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"--threads must be a whole number >= 1 or 'auto'") as info:
        threads.parse_threads(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("good", "expected"), [("auto", "auto"), ("AUTO", "auto"), ("3", 3), (1, 1)])
def test_good_thread_counts(good: object, expected: object) -> None:
    assert threads.parse_threads(good) == expected


def test_set_threads_applies_and_is_recorded_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_applied", None)
    try:
        setting = threads.set_threads(1)
        assert torch.get_num_threads() == 1
        assert setting["threads"] == 1 and setting["requested"] == "--threads"
        assert env.collect()["threads"] == setting
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.set_threads("auto")["requested"] == "OMP_NUM_THREADS=1"
        monkeypatch.delenv("OMP_NUM_THREADS")
        auto = threads.set_threads("auto")
        assert auto["requested"].startswith("auto") and auto["threads"] == torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(before)


def test_thread_count_resolves_auto_for_onnx_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "auto_threads", lambda: 3)
    assert threads.thread_count("auto") == 3 and threads.thread_count("2") == 2 and threads.thread_count(4) == 4
    with pytest.raises(ConfigError, match="--threads must be a whole number >= 1 or 'auto'"):
        threads.thread_count("-1")
