"""The onnxruntime-genai model-builder path (LMExportConfig.builder): the builder's graph passes the same parity
check, the runtime serves its right-padded batches, ``auto`` keeps the faster graph and falls back to slimtune's
where the builder cannot serve, and a missing package is one line."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from slimtune.errors import ConfigError, MissingDependencyError, UnsupportedModelError
from slimtune.export import lm_genai
from slimtune.export.lm_bundle import export_lm, export_lm_bundle
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.models import load_lm
from slimtune.models.lm import lm_tokenizer
from slimtune.runtime import LMGenerator
from slimtune.runtime.decoder import Decoder, ort_decoder_session
from slimtune.testing.tiny_lm import make_layers_differ_

pytest.importorskip("onnxruntime_genai")
PROMPTS = [[72, 101, 108, 108, 111], [84, 104, 101, 32, 99, 97, 116], [97], [10, 20, 30, 40, 50, 60, 70, 80, 90]]
CHECK = LMExportConfig(greedy_tokens=16, prompts=2, windows=2, window_length=32)


def _model():
    model = load_lm("tiny-llama")
    model.config.eos_token_id = model.generation_config.eos_token_id = None  # all greedy tokens are compared
    return model


@pytest.fixture(scope="module")
def auto_genai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle from ``builder='auto'`` with the timing rigged so the builder's graph wins."""
    mp = pytest.MonkeyPatch()
    mp.setattr(lm_genai, "decode_ms", lambda path, **_: 1.0 if Path(path).stem == "genai" else 2.0)
    model = _model()
    out = tmp_path_factory.mktemp("genai") / "bundle"
    try:
        cfg = LMExportConfig(builder="auto", greedy_tokens=16, prompts=2, windows=2, window_length=32)
        return export_lm_bundle(model, lm_tokenizer(model).tokenizer, out, prompts=["Hello", "The cat"], config=cfg)
    finally:
        mp.undo()


def test_auto_keeps_the_faster_builder_graph_and_it_passes_parity(auto_genai: Path) -> None:
    manifest = json.loads((auto_genai / "bundle.json").read_text())
    parity = manifest["parity"]
    assert parity["builder"] == "genai" and parity["decode_ms"] == {"slimtune": 2.0, "genai": 1.0}
    assert parity["greedy_identical"] and parity["max_abs_diff"] < 1e-4
    assert "position_ids" not in manifest["input"]["names"]
    graph = onnx.load(str(auto_genai / "model.onnx")).graph
    assert "GroupQueryAttention" in {n.op_type for n in graph.node}
    assert "position_ids" not in {i.name for i in graph.input}
    assert not [p for p in auto_genai.iterdir() if p.is_dir()]  # no work folders left behind


def test_builder_graph_serves_padded_batches_by_right_padding(auto_genai: Path) -> None:
    decoder = Decoder(ort_decoder_session(auto_genai / "model.onnx"))
    assert decoder.right_padded
    batch = decoder.generate(PROMPTS, max_new_tokens=12)
    assert batch == [decoder.generate([p], max_new_tokens=12)[0] for p in PROMPTS]
    gen = LMGenerator(auto_genai)
    texts = gen.generate(["Hello", "The cat sat"], max_new_tokens=8)
    assert texts == [gen.generate("Hello", max_new_tokens=8), gen.generate("The cat sat", max_new_tokens=8)]


def test_auto_uses_slimtune_graph_where_the_builder_cannot_serve(tmp_path: Path) -> None:
    model = _model()
    make_layers_differ_(model)
    report = export_lm(model, tmp_path / "m.onnx", prompts=PROMPTS[:2], config=LMExportConfig(builder="auto"))
    assert report["builder"] == "slimtune" and "blocks differ" in report["builder_reason"]
    assert report["greedy_identical"]
    with pytest.raises(UnsupportedModelError, match=r"builder 'genai' cannot export.*blocks differ.*'slimtune'"):
        export_lm(model, tmp_path / "g.onnx", config=LMExportConfig(builder="genai"))
    assert not (tmp_path / "g.onnx").exists()


def test_missing_package_and_bad_builder_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="builder must be 'auto', 'slimtune' or 'genai'"):
        LMExportConfig(builder="optimum")
    monkeypatch.setattr(lm_genai, "genai_installed", lambda: False)
    with pytest.raises(MissingDependencyError, match="pip install onnxruntime-genai"):
        export_lm(_model(), tmp_path / "m.onnx", config=LMExportConfig(builder="genai"))
    report = export_lm(_model(), tmp_path / "a.onnx", config=LMExportConfig(builder="auto", greedy_tokens=4))
    assert report["builder"] == "slimtune" and "not installed" in report["builder_reason"]
