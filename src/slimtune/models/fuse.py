"""Deploy-time folding of BatchNorm into the convolution before it, so eager PyTorch runs one op instead of two.

ONNX Runtime folds BatchNorm itself; eager PyTorch does not, and on small models (few channels, batch 1) the
extra memory pass and op dispatch are a large part of the latency, more so after structured pruning has
shrunk the convolutions. ``fold_batchnorm_`` finds every ``ConvNd -> BatchNormNd`` pair in the traced graph
where the convolution's output feeds only that BatchNorm and each module runs once, replaces the convolution
by one with the BatchNorm's affine transform folded into its weight and bias (eval-mode statistics), and the
BatchNorm by ``nn.Identity``. The result is an ordinary module: it saves, reloads from its spec and exports.
"""

from __future__ import annotations

import logging
from collections import Counter
from itertools import pairwise

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.nn.utils.parametrize import is_parametrized

log = logging.getLogger(__name__)

_PAIRS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
)


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    if conv is None or bn is None or (type(conv), type(bn)) not in _PAIRS or is_parametrized(conv):
        return False
    return isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None


def _traced_pairs(model: nn.Module, modules: dict[str, nn.Module]) -> list[tuple[str, str]]:
    graph = fx.symbolic_trace(model).graph
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        if src.op != "call_module" or len(src.users) != 1 or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        if _foldable(modules.get(str(src.target)), modules.get(str(node.target))):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Adjacent (conv, bn) children of ``nn.Sequential`` containers: safe without a trace."""
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, conv), (b, bn) in pairwise(children):
                if _foldable(conv, bn):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The ``(conv, batchnorm)`` module names ``fold_batchnorm_`` would fold. Models that ``torch.fx``
    cannot trace fall back to adjacent pairs inside ``nn.Sequential`` containers."""
    modules = dict(model.named_modules())
    try:
        return _traced_pairs(model, modules)
    except Exception as exc:  # fx cannot trace data-dependent control flow: use what is certain
        log.debug("fx trace failed (%s); folding only adjacent Sequential pairs", exc)
        return _sequential_pairs(model)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def fold_batchnorm_(model: nn.Module) -> None:
    """Fold every foldable BatchNorm into the convolution before it, in place, and put ``model`` in eval
    mode (folding uses the running statistics, so it is for inference only)."""
    model.eval()
    pairs = batchnorm_pairs(model)
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
            assert isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d)
            assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
            _set(model, conv_name, fuse_conv_bn_eval(conv, bn))
            _set(model, bn_name, nn.Identity())
    log.info("folded %d BatchNorm layer(s) into their convolutions", len(pairs))
