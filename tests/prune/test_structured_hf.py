"""Hugging Face encoders other than BERT prune as BERT does: DistilBERT (attention owning ``out_lin``, FFN
``lin1``/``lin2``), RoBERTa and ViT (``q_proj``…``o_proj``, ``mlp.fc1``/``fc2``). Random-init tiny configs,
built offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from slimtune.evaluate.macs import count_macs
from slimtune.export.onnx import export_onnx, parity
from slimtune.prune import StructuredPruneConfig, structured_prune

tf = pytest.importorskip("transformers")
SEQ = 12


def text_model(kind: str) -> nn.Module:
    from slimtune.models import hf

    small: dict[str, Any] = {"vocab_size": 100, "max_position_embeddings": 40, "num_labels": 2}
    if kind == "distilbert":
        config = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **small)
    else:
        config = tf.RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, pad_token_id=1, **small
        )
    torch.manual_seed(0)
    return hf.from_spec({"hf_config": config.to_dict(), "input_shape": [SEQ], "options": {"pad_id": 1}}).eval()


class ViTClassifier(nn.Module):
    """What a user brings: ViTForImageClassification returning logits."""

    def __init__(self) -> None:
        super().__init__()
        config = tf.ViTConfig(
            image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, num_labels=3,
        )  # fmt: skip
        self.model = tf.ViTForImageClassification(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=pixels).logits
        return logits


def make(kind: str) -> tuple[nn.Module, torch.Tensor]:
    if kind == "vit":
        torch.manual_seed(0)
        return ViTClassifier().eval(), torch.randn(4, 3, 16, 16)
    ids = torch.randint(2, 100, (4, SEQ), generator=torch.Generator().manual_seed(1))
    ids[:, 9:] = 1
    return text_model(kind), ids


def attentions(model: nn.Module) -> list[tuple[int, nn.Linear, nn.Linear]]:
    """(heads, q projection, output projection) of every attention layer."""
    out = []
    for m in model.modules():
        name = type(m).__name__
        if name == "DistilBertSelfAttention":
            out.append((m.n_heads, m.q_lin, m.out_lin))
        elif name == "ViTAttention":
            out.append((m.num_attention_heads, m.q_proj, m.o_proj))
    for layer in getattr(getattr(getattr(model, "model", None), "roberta", None), "encoder", nn.Module()).modules():
        if type(layer).__name__ == "RobertaAttention":
            out.append((layer.self.num_attention_heads, layer.self.query, layer.output.dense))
    return out  # type: ignore[return-value]


def ffns(model: nn.Module) -> list[nn.Linear]:
    names = (".ffn.lin1", ".mlp.fc1", ".intermediate.dense")
    return [m for n, m in model.named_modules() if n.endswith(names) and isinstance(m, nn.Linear)]


@pytest.mark.parametrize("kind", ["distilbert", "roberta", "vit"])
def test_encoder_at_half_loses_half_its_heads_and_ffn_with_parity(kind: str, tmp_path: Path) -> None:
    model, x = make(kind)
    macs = count_macs(model, x[:1])
    assert [h for h, _, _ in attentions(model)] == [4, 4] and [f.out_features for f in ffns(model)] == [64, 64]

    result = structured_prune(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)

    for heads, q, o in attentions(model):
        assert (heads, q.out_features, o.in_features) == (2, 16, 16)
    assert [f.out_features for f in ffns(model)] == [32, 32]
    assert count_macs(model, x[:1]) < 0.56 * macs  # ÷≈2: the embeddings and the head are not cut
    if kind == "vit":  # the hidden size, one residual stream in a pre-LayerNorm encoder: named by its first producer
        assert "model.vit.embeddings outputs: frozen, kept 32/32" in " ".join(result.lines())
    onnx = export_onnx(model, x[:1], tmp_path / f"{kind}.onnx")
    assert parity(model, onnx, x)["max_abs_diff"] < 1e-4


@pytest.mark.parametrize(
    ("targets", "heads", "ffn", "layers"),
    [(("ffn",), 4, 32, 2), (("heads",), 2, 64, 2), (("layers",), 4, 64, 1), (("heads", "ffn", "layers"), 2, 32, 1)],
)
def test_distilbert_targets(targets: tuple[str, ...], heads: int, ffn: int, layers: int) -> None:
    model, x = make("distilbert")
    config = StructuredPruneConfig(ratio=0.5, targets=targets, layers_ratio=0.5 if "layers" in targets else 0.0)
    result = structured_prune(model, config, example_inputs=x)
    assert [h for h, _, _ in attentions(model)] == [heads] * layers
    assert [f.out_features for f in ffns(model)] == [ffn] * layers
    assert len(result.removed_layers) == 2 - layers
    assert model(x).shape == (4, 2)


def test_pruned_distilbert_saves_and_reloads(tmp_path: Path) -> None:
    from slimtune.models import load_model, save_model

    model, x = make("distilbert")
    config = StructuredPruneConfig(ratio=0.5, targets=("heads", "ffn", "layers"), layers_ratio=0.5)
    structured_prune(model, config, example_inputs=x)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    assert [h for h, _, _ in attentions(again)] == [2] and [f.out_features for f in ffns(again)] == [32]
    assert torch.equal(again(x), model(x))


def test_distilbert_student_from_teacher_keeps_the_teachers_best_heads() -> None:
    from slimtune.distill import StudentConfig, build_student

    teacher, x = make("distilbert")
    student = build_student(teacher, StudentConfig(layers=(1,), heads_ratio=0.5, ffn_ratio=0.5))
    assert [h for h, _, _ in attentions(student)] == [2] and [f.out_features for f in ffns(student)] == [32]
    assert [h for h, _, _ in attentions(teacher)] == [4, 4] and student(x).shape == (4, 2)


def test_removing_zeroed_heads_keeps_the_function() -> None:
    """L1 finds the heads whose q/k/v rows and output columns are zero; cutting them changes nothing."""
    model, x = make("distilbert")
    with torch.no_grad():
        for _, q, o in attentions(model):
            attn = model.get_submodule(next(n for n, m in model.named_modules() if getattr(m, "q_lin", None) is q))
            for lin in (attn.q_lin, attn.k_lin, attn.v_lin):
                lin.weight[8:24] = 0
                lin.bias[8:24] = 0
            o.weight[:, 8:24] = 0
    before = model(x)
    structured_prune(model, StructuredPruneConfig(ratio=0.5, targets=("heads",)), example_inputs=x)
    assert [h for h, _, _ in attentions(model)] == [2, 2]
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["distilbert", "vit"])
def test_attention_distillation_reads_pruned_encoders(kind: str) -> None:
    """Attention-map transfer finds their attention layers and recomputes eager attention's probabilities,
    for a student whose heads were pruned against its unpruned teacher."""
    from slimtune.distill import AttentionKDConfig, DistillationTask, attention_layers, attention_probs

    teacher, x = make(kind)
    student, _ = make(kind)
    structured_prune(student, StructuredPruneConfig(ratio=0.5, targets=("heads",)), example_inputs=x)
    inner = teacher.model
    inner.set_attn_implementation("eager")  # type: ignore[operator]
    seen: dict[str, torch.Tensor] = {}

    def hook(m: nn.Module, a: tuple[Any, ...], k: dict[str, Any], o: tuple[torch.Tensor, torch.Tensor]) -> None:
        seen.update(ours=attention_probs(m, a, k), eager=o[1])

    layers = attention_layers(teacher)
    assert len(layers) == 2
    handle = layers[1].register_forward_hook(hook, with_kwargs=True)
    teacher(x)
    handle.remove()
    torch.testing.assert_close(seen["ours"], seen["eager"])
    task = DistillationTask(teacher, hints=[AttentionKDConfig()])
    wrapped = task.wrap(student, x[:2])
    loss, _ = task.loss(wrapped, x, torch.zeros(len(x), dtype=torch.long))
    assert torch.isfinite(loss) and float(wrapped.terms[0].loss()) > 0  # type: ignore[index]


def distilbert_folder(folder: Path) -> Path:
    """A random-init DistilBERT classifier folder with a WordPiece tokenizer, as a user would bring it."""
    tokenizers = pytest.importorskip("tokenizers")
    words = ["good", "great", "love", "bad", "awful", "hate", "the", "movie", "was", "food", "i", "it"]
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(folder)
    config = tf.DistilBertConfig(
        vocab_size=len(vocab), dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, pad_token_id=0
    )
    torch.manual_seed(0)
    tf.DistilBertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_recipe_prunes_a_distilbert_folder_like_bert(tmp_path: Path) -> None:
    from slimtune.data import load
    from slimtune.errors import DataError, MissingDependencyError
    from slimtune.models import load_model
    from slimtune.recipe import parse_recipe, run_recipe

    try:
        load("tweets-binary", limit=20)
    except (MissingDependencyError, DataError) as exc:
        pytest.skip(f"tweets data not installed here: {exc}")
    raw = {
        "name": "distilbert",
        "data": {"name": "tweets-binary", "limit": 60, "max_length": 16},
        "model": {"name": "hf", "options": {"path": str(distilbert_folder(tmp_path / "distilbert"))}},
        "stages": [{"stage": "prune", "method": "structured", "ratio": 0.5}],
    }
    row = run_recipe(parse_recipe(raw), tmp_path / "out").rows[0]
    groups = {(g["group"], g["target"]): (g["kept"], g["units"]) for g in row.extra["prune_groups"]}
    for i in (0, 1):
        assert groups[(f"model.distilbert.transformer.layer.{i}.attention", "heads")] == (2, 4)
        assert groups[(f"model.distilbert.transformer.layer.{i}.ffn.lin1", "ffn")] == (32, 64)
    assert row.extra["prune"]["macs_kept"] < 0.56
    model = load_model(tmp_path / "out" / "01-prune" / "model")
    assert [h for h, _, _ in attentions(model)] == [2, 2]
