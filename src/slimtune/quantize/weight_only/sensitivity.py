"""Per-layer sensitivity of a causal LM to weight-only quantization: the output KL divergence when that one Linear
(everything else fp32) is rounded at the low bit width.

For each decoder-block Linear, its weight is replaced by the RTN dequantization at ``bits`` / ``group_size`` /
``symmetric`` and the mean per-token KL(p_fp32 ‖ p_quantized) of the next-token distributions on calibration
windows is recorded; then the weight is restored. RTN is the probe whatever algorithm quantizes afterwards: it is
data-free and cheap, and the ranking it gives is what a bit-allocation plan needs (HAWQ-style proxies rank the
same way). Cost: one forward pass of the windows per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.models.blocks import linear_weight, set_linear_weight
from slimtune.quantize.weight_only.api import block_targets
from slimtune.quantize.weight_only.grid import rtn


def _log_probs(model: nn.Module, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    outs = [model(input_ids=chunk, use_cache=False).logits.float() for chunk in windows.split(batch_size)]
    return torch.log_softmax(torch.cat(outs), dim=-1)


def layer_sensitivity(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    batch_size: int = 4,
    layers: dict[str, nn.Module] | None = None,
    units: dict[str, list[str]] | None = None,
) -> dict[str, float]:
    """KL(fp32 ‖ one unit at ``bits``) for each unit of ``model`` on ``windows`` (token ids [n, length]): a unit
    is one block Linear (default) or, with ``units`` (unit name → layer names), several rounded together (a whole
    decoder block: one forward pass per block instead of per Linear). The model is left unchanged."""
    targets = layers if layers is not None else block_targets(model)
    groups = units if units is not None else {name: [name] for name in targets}
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        with torch.no_grad():
            ref = _log_probs(model, windows.long(), batch_size)
            for unit, names in groups.items():
                originals = {n: linear_weight(targets[n]).clone() for n in names}
                for n, w in originals.items():
                    q = rtn(w.float(), bits=bits, group_size=group_size, symmetric=symmetric)
                    set_linear_weight(targets[n], q.dequantize().to(w.dtype))
                try:
                    logq = _log_probs(model, windows.long(), batch_size)
                finally:
                    for n, w in originals.items():
                        set_linear_weight(targets[n], w)
                kl = F.kl_div(logq.flatten(0, 1), ref.flatten(0, 1), log_target=True, reduction="batchmean")
                out[unit] = max(float(kl), 0.0)
    finally:
        model.train(was_training)
    return out
