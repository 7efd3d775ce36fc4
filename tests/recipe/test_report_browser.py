"""The HTML report opens in headless Chromium without console errors and shows its plots.
Skipped where no Chromium is installed (apt-get install chromium); docs/report.png is its screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from slimtune.recipe import parse_recipe, run_recipe

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=3000",
]


def open_in_chromium(page: Path, *extra: str) -> tuple[str, list[str]]:
    """The rendered DOM and the page's console messages."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, *FLAGS, *extra, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    console = [line for line in done.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    return done.stdout, console


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed")
def test_report_html_renders_plots_without_console_errors(tmp_path: Path) -> None:
    recipe = {
        "data": {"name": "digits", "seed": 0, "limit": 400},
        "model": {"name": "mlp", "options": {"hidden": [32]}},
        "stages": [
            {"stage": "train", "train": {"epochs": 3, "seed": 0}},
            {"stage": "prune", "method": "magnitude", "sparsity": 0.5},
            {"stage": "quantize", "method": "ort-dynamic-int8"},
        ],
    }
    run_recipe(parse_recipe(recipe), tmp_path / "run")
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _, console = open_in_chromium(bad)
    assert any("undefinedFunction" in line for line in console)  # the check can fail
    dom, console = open_in_chromium(tmp_path / "run" / "report.html")
    assert console == []
    assert dom.count("<svg") >= 2 and "<circle" in dom and "quantize" in dom
