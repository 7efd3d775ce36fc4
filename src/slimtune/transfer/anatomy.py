"""Where a model's head is and what its blocks are, per architecture, so fine-tuning can replace the
head, freeze all but the last k blocks, unfreeze gradually and give each depth its own learning rate.

Blocks run from the input to the head (the head excluded):

* MLPs and LeNets: every Linear/Conv2d layer but the last Linear (the head);
* ``resnet-small``: the stem, then each residual block;
* ``transformer-small``: the embeddings, then each encoder layer (the final norm joins the last one);
* Hugging Face classifiers: the embeddings, then each encoder layer (the pooler and anything else after
  the layers join the last one); the head is the last Linear outside the base model, the modules beside
  it (``pre_classifier``, RoBERTa's ``dense``) train with it;
* ``efficientnet-lite0``: the stem, then each stage (consecutive MBConv blocks of one width; the
  1×1 head convolution joins the last);
* Hugging Face causal LMs (any model with ``get_output_embeddings`` and a base model, e.g.
  ``LlamaForCausalLM``, ``GPT2LMHeadModel``): the embeddings, then each decoder layer (the final norm
  joins the last); the head is the LM head (``lm_head``). It is pretrained, not new, so LoRA leaves it
  frozen; with tied embeddings it is the embedding matrix, and trains whenever the embeddings do.

Other models: ``register_anatomy(cls, fn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from slimtune.errors import UnsupportedModelError


@dataclass
class Anatomy:
    """Module paths (as in ``named_modules``): ``head`` is the final ``nn.Linear``."""

    head: str
    blocks: list[list[str]]  # input → output
    head_extra: list[str] = field(default_factory=list)  # head-side modules that train with the head
    lora_trains_head: bool = True  # a new classifier head trains beside LoRA adapters; an LM head does not

    def head_module(self, model: nn.Module) -> nn.Linear:
        head = model.get_submodule(self.head)
        if not isinstance(head, nn.Linear):
            raise UnsupportedModelError(f"the head '{self.head}' is a {type(head).__name__}, not a Linear layer")
        return head

    def head_params(self, model: nn.Module) -> list[nn.Parameter]:
        return _params(model, [self.head, *self.head_extra])

    def block_params(self, model: nn.Module) -> list[list[nn.Parameter]]:
        return [_params(model, paths) for paths in self.blocks]


def _params(model: nn.Module, paths: list[str]) -> list[nn.Parameter]:
    out: dict[int, nn.Parameter] = {}
    for path in paths:
        for p in model.get_submodule(path).parameters():
            out.setdefault(id(p), p)
    return list(out.values())


AnatomyFn = Callable[[nn.Module], Anatomy]
_ANATOMIES: dict[type, AnatomyFn] = {}


def register_anatomy(cls: type, fn: AnatomyFn | None = None) -> Callable[[AnatomyFn], AnatomyFn]:
    """Teach fine-tuning the head and blocks of ``cls`` (a decorator, or call with ``fn``)."""

    def deco(f: AnatomyFn) -> AnatomyFn:
        _ANATOMIES[cls] = f
        return f

    if fn is not None:
        deco(fn)
    return deco


def anatomy(model: nn.Module) -> Anatomy:
    """The head and blocks of ``model``; ``UnsupportedModelError`` for an architecture without a layout."""
    _register_builtins()
    for cls in type(model).__mro__:
        if cls in _ANATOMIES:
            return _ANATOMIES[cls](model)
    lm = _causal_lm(model)
    if lm is not None:
        return lm
    known = ", ".join(sorted(c.__name__ for c in _ANATOMIES))
    raise UnsupportedModelError(
        f"fine-tuning knows no head/block layout for {type(model).__name__} (known: {known}); "
        "register one with slimtune.transfer.register_anatomy"
    )


def is_layer(m: nn.Module, kinds: tuple[type, ...] = (nn.Linear,)) -> bool:
    """``m`` is one of ``kinds``, or a LoRA wrapper around one."""
    base = getattr(m, "base_layer", None)
    return isinstance(m, kinds) or (isinstance(base, kinds) and hasattr(m, "get_base_layer"))


def _layered(model: nn.Module) -> Anatomy:
    """Plain stacks (MLP, LeNet): each weight layer is a block; the last Linear is the head."""
    layers = [n for n, m in model.named_modules() if n and is_layer(m, (nn.Linear, nn.Conv2d))]
    layers = [n for n in layers if not any(n.startswith(o + ".") for o in layers)]  # not a LoRA wrapper's base
    if not layers or not is_layer(model.get_submodule(layers[-1])):
        raise UnsupportedModelError(f"{type(model).__name__} has no final Linear layer to use as the head")
    return Anatomy(head=layers[-1], blocks=[[n] for n in layers[:-1]])


def _resnet(model: nn.Module) -> Anatomy:
    n = len(list(model.get_submodule("layers").children()))
    return Anatomy(head="fc", blocks=[["stem"], *[[f"layers.{i}"] for i in range(n)]])


def _transformer(model: nn.Module) -> Anatomy:
    n = len(list(model.get_submodule("layers").children()))
    blocks = [["tokens", "positions"], *[[f"layers.{i}"] for i in range(n)]]
    blocks[-1].append("norm")
    return Anatomy(head="head", blocks=blocks)


def _efficientnet(model: nn.Module) -> Anatomy:
    stages: list[list[str]] = [["net._conv_stem", "net._bn0"]]
    width = None
    for i, block in enumerate(model.get_submodule("net._blocks").children()):
        out = getattr(block, "_block_args").output_filters  # noqa: B009
        if out != width:
            stages.append([])
            width = out
        stages[-1].append(f"net._blocks.{i}")
    stages[-1] += ["net._conv_head", "net._bn1"]
    return Anatomy(head="net._fc", blocks=stages)


def _hf(model: nn.Module) -> Anatomy:
    hf = model.get_submodule("model")
    prefix = getattr(hf, "base_model_prefix", "")
    base = getattr(hf, prefix, None) if prefix else None
    if not isinstance(base, nn.Module):
        raise UnsupportedModelError(f"{type(hf).__name__}: no base model found under '{prefix}'")
    blocks = _layer_blocks(base, f"model.{prefix}", type(hf).__name__)
    head_side = [f"model.{n}" for n, _ in hf.named_children() if n != prefix]
    linears = [f"{c}.{n}".rstrip(".") for c in head_side for n, _ in model.get_submodule(c).named_modules()]
    linears = [p for p in linears if is_layer(model.get_submodule(p))]
    if not linears:
        raise UnsupportedModelError(f"{type(hf).__name__}: no Linear classification head outside the base model")
    head = linears[-1]
    extra = [c for c in head_side if not head.startswith(c + ".") and c != head] + linears[:-1]
    return Anatomy(head=head, blocks=blocks, head_extra=extra)


def _layer_blocks(base: nn.Module, root: str, what: str) -> list[list[str]]:
    """Blocks of a Hugging Face base model at path ``root``: what comes before the longest ModuleList
    (embeddings), then each of its layers (anything after the layers joins the last one)."""
    lists = [(n, len(m)) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise UnsupportedModelError(f"{what}: no list of encoder/decoder layers found")
    layers, count = max(lists, key=lambda nm: nm[1])
    blocks: list[list[str]] = [[] for _ in range(count + 1)]
    after_layers = False
    for name, _ in base.named_parameters():  # registration order: embeddings, layers, then pooler/norm
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner.startswith(layers + "."):
            index = int(owner[len(layers) + 1 :].split(".")[0])
            path, block = f"{root}.{layers}.{index}", blocks[index + 1]
            after_layers = True
        else:
            path, block = f"{root}.{owner}".rstrip("."), blocks[-1] if after_layers else blocks[0]
        if path not in block:
            block.append(path)
    return [b for b in blocks if b]


def _causal_lm(model: nn.Module) -> Anatomy | None:
    """The layout of a Hugging Face causal LM, the model itself or the outermost one inside a wrapper
    (duck-typed, so transformers is not imported), or None."""
    for root, lm in model.named_modules():
        get_head = getattr(lm, "get_output_embeddings", None)
        prefix = getattr(lm, "base_model_prefix", "")
        base = getattr(lm, prefix, None) if prefix else None
        if not callable(get_head) or not isinstance(base, nn.Module):
            continue
        head_module = get_head()
        head = next((n for n, m in model.named_modules() if m is head_module and n), None)
        if head is None or not is_layer(head_module):
            return None
        where = f"{root}.{prefix}" if root else prefix
        blocks = _layer_blocks(base, where, type(lm).__name__)
        return Anatomy(head=head, blocks=blocks, lora_trains_head=False)
    return None


_builtins_done = False


def _register_builtins() -> None:
    global _builtins_done
    if _builtins_done:
        return
    from slimtune.models import efficientnet, hf, transformer, zoo

    for cls, fn in [
        (zoo.MLP, _layered),
        (zoo.LeNet5, _layered),
        (zoo.ResNetSmall, _resnet),
        (transformer.TransformerClassifier, _transformer),
        (efficientnet.EfficientNetLite, _efficientnet),
        (hf.HFClassifier, _hf),
    ]:
        _ANATOMIES.setdefault(cls, fn)
    _builtins_done = True
