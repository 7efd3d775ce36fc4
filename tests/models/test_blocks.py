"""The one block-by-block calibration pass: targets hooked per block, every token observed, and each block fed
the outputs of the blocks already compressed (Llama with GQA, GPT-2 with Conv1D)."""

from __future__ import annotations

import torch
from torch import nn

from slimtune.models.blocks import BlockContext, calibration_pass, linear_weight, set_linear_weight, target_layers
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

IDS = torch.randint(0, 256, (6, 12), generator=torch.Generator().manual_seed(3))


class Recorder:
    """Counts observed tokens per (block, layer); zeroes the MLP output layer of block 0 when asked."""

    def __init__(self, *, zero_first_mlp: bool = False, out_name: str = "mlp.down_proj") -> None:
        self.seen: dict[tuple[int, str], int] = {}
        self.inputs: dict[tuple[int, str], list[torch.Tensor]] = {}
        self.block = 0
        self.zero, self.out_name = zero_first_mlp, out_name

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.seen[(self.block, name)] = self.seen.get((self.block, name), 0) + x.shape[0]
        self.inputs.setdefault((self.block, name), []).append(x.clone())

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        assert ctx.index == self.block
        if self.zero and ctx.index == 0:
            layer = targets[self.out_name]
            set_linear_weight(layer, torch.zeros_like(linear_weight(layer)))
            if getattr(layer, "bias", None) is not None:
                layer.bias.data.zero_()
        self.block += 1


def test_every_target_of_every_block_sees_every_token() -> None:
    for model, per_block in ((tiny_llama(), 7), (tiny_gpt2(), 4)):
        rec = Recorder()
        calibration_pass(model, IDS, rec, batch_size=4, progress=False)
        assert len(rec.seen) == 2 * per_block
        assert set(rec.seen.values()) == {IDS.numel()}


def test_next_block_sees_the_compressed_outputs() -> None:
    for make, out_name, first in (
        (tiny_llama, "mlp.down_proj", "self_attn.q_proj"),
        (tiny_gpt2, "mlp.c_proj", "attn.c_attn"),
    ):
        model = make()
        rec = Recorder(zero_first_mlp=True, out_name=out_name)
        calibration_pass(model, IDS, rec, batch_size=6, progress=False)
        # the model now has block 0's MLP output zeroed: block 1's first layer input must be what it sees now
        got = rec.inputs[(1, first)][0]
        captured: list[torch.Tensor] = []
        layer = dict(target_layers(model.model.layers[1] if hasattr(model, "model") else model.transformer.h[1]))[first]
        h = layer.register_forward_pre_hook(
            lambda m, a, captured=captured: captured.append(a[0].reshape(-1, a[0].shape[-1]))
        )
        with torch.no_grad():
            model(input_ids=IDS, use_cache=False)
        h.remove()
        torch.testing.assert_close(got, captured[0], rtol=1e-5, atol=1e-5)
        fresh: list[torch.Tensor] = []
        orig = make()
        layer = dict(target_layers(orig.model.layers[1] if hasattr(orig, "model") else orig.transformer.h[1]))[first]
        h = layer.register_forward_pre_hook(lambda m, a, out=fresh: out.append(a[0].reshape(-1, a[0].shape[-1])))
        with torch.no_grad():
            orig(input_ids=IDS, use_cache=False)
        h.remove()
        assert not torch.allclose(got, fresh[0], atol=1e-3)  # and not the uncompressed activations


def test_pass_leaves_an_untouched_model_unchanged() -> None:
    model = tiny_llama()
    with torch.no_grad():
        before = model(IDS).logits
    calibration_pass(model, IDS, Recorder(), batch_size=4, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, before)
    assert not model.training
