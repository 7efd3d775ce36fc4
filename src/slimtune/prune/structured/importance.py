"""Unit importance. Every criterion is a per-unit *mean* over all the tensors cut with the unit (producers'
rows, consumers' columns, followers' entries), so scores of wide and narrow layers are comparable and
global ranking is meaningful:

* ``l1``: mean |w|; ``l2``: root-mean-square of w;
* ``taylor``: mean |w · ∂loss/∂w|, the first-order estimate of the loss change when the unit is removed,
  accumulated over a few training batches (Molchanov et al. 2019);
* ``bn-scale``: mean |γ| of the BatchNorm(s) following the unit (network slimming, Liu et al. 2017); groups
  without a norm layer have no score and are left whole;
* ``random``: a seeded baseline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtune.data.core import DataSplits
from slimtune.errors import DataError
from slimtune.prune.structured.graph import Group
from slimtune.prune.structured.trace import Member, call

Saliency = dict[int, torch.Tensor]  # id(parameter) → accumulated |w · grad|


def taylor_saliency(model: nn.Module, data: DataSplits, *, batches: int, batch_size: int = 32) -> Saliency:
    """|w · ∂loss/∂w| summed over the first ``batches`` training batches (eval mode: no dropout)."""
    x, y = data.train.x, data.train.y
    if not isinstance(x, torch.Tensor):
        raise DataError(
            "importance 'taylor' needs tensor inputs; tokenize text first with slimtune.models.inputs.tokenize_splits "
            "(recipes and slimtune stage do it)"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    acc: Saliency = {id(p): torch.zeros_like(p) for p in params}
    device = next(iter(params)).device if params else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        for i in range(min(batches, max(1, -(-len(y) // batch_size)))):
            xb, yb = x[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size]
            logits = call(model, xb.to(device))
            loss = nn.functional.cross_entropy(logits, yb.to(device))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    acc[id(p)] += (p.detach() * g).abs()
    finally:
        model.train(was_training)
    return acc


def _per_channel(values: torch.Tensor, dim: int, member: Member, size: int) -> tuple[torch.Tensor, int]:
    """Sum of ``values`` per channel along ``dim`` (laid out outer × [..., size × inner, ...], the member's
    part of each block), and entries per channel."""
    offset, width = member.span(size)
    v = values.movedim(dim, 0).reshape(member.outer, width, -1)[:, offset : offset + size * member.inner]
    v = v.reshape(member.outer, size, member.inner, -1)
    return v.sum(dim=(0, 2, 3)), v.numel() // size


@torch.no_grad()
def unit_scores(
    group: Group, model: nn.Module, method: str, *, saliency: Saliency | None = None, generator: Any = None
) -> torch.Tensor | None:
    """One score per unit of ``group`` (higher = more important), or None when ``method`` does not apply."""
    if method == "random":
        return torch.rand(group.units, generator=generator)
    total = torch.zeros(group.size, dtype=torch.float64)
    count = 0
    for m in group.members:
        module = model.get_submodule(m.name)
        if method == "bn-scale":
            tensors = [(getattr(module, s), m.cut.params[s]) for s in m.scale]
        else:
            tensors = m.cut.tensors(module)
        for t, dim in tensors:
            if method == "taylor":
                if saliency is None or id(t) not in saliency:
                    continue
                values = saliency[id(t)]
            else:
                values = t.detach().abs() if method in ("l1", "bn-scale") else t.detach().square()
            sums, n = _per_channel(values.double(), dim, m, group.size)
            total += sums.cpu()
            count += n
    if count == 0:
        return None
    per_unit = total.view(group.units, group.unit).sum(1) / (count * group.unit)
    return (per_unit.sqrt() if method == "l2" else per_unit).float()
