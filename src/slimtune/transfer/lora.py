"""LoRA adapters (Hu et al. 2021) through ``peft``, on Hugging Face classifiers and on slimtune's own
models (any Linear layer of the trunk; Conv2d layers too when named in ``target_modules``).

``add_lora_`` injects adapters in place and leaves only them and the head trainable; ``merge_lora_``
folds them back into the weights (W + B·A·α/r) and removes them, so the model is an ordinary module
again, which its spec rebuilds, that saves, prunes, quantizes and exports like any other.
Needs ``pip install -c constraints.txt 'slimtune[lora]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError, missing_dependency
from slimtune.transfer.anatomy import anatomy

LORA_MARK = "lora_"


@dataclass(frozen=True, kw_only=True)
class LoRAConfig(Config):
    """``target_modules``: module names or name suffixes (``q``, ``attn.v``, ``query``); empty: the
    query/value projections of transformers, every trunk Linear layer of other models."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()
    merge: bool = True  # merge the adapters into the weights when fine-tuning ends

    def __post_init__(self) -> None:
        check(self.r >= 1, f"lora.r must be >= 1, got {self.r}")
        check(self.alpha > 0, f"lora.alpha must be > 0, got {self.alpha}")
        check(0 <= self.dropout < 1, f"lora.dropout must be in [0, 1), got {self.dropout}")


def _peft() -> ModuleType:
    try:
        import peft
    except ImportError as exc:
        raise missing_dependency("peft", "lora") from exc
    return peft


def _is_adapter(m: nn.Module) -> bool:
    return hasattr(m, "get_base_layer") and hasattr(m, "merge") and hasattr(m, "base_layer")


def has_lora(model: nn.Module) -> bool:
    return any(_is_adapter(m) for m in model.modules())


def _default_suffixes(model: nn.Module) -> tuple[str, ...] | None:
    from slimtune.models.hf import HFClassifier
    from slimtune.models.transformer import TransformerClassifier

    if isinstance(model, TransformerClassifier):
        return ("attn.q", "attn.v")
    hf = model.model if isinstance(model, HFClassifier) else model
    configs = (getattr(m, "config", None) for m in hf.modules())  # a causal LM, or one inside a wrapper
    model_type = next((t for c in configs if isinstance(t := getattr(c, "model_type", None), str)), None)
    if isinstance(model, HFClassifier) or model_type is not None:  # HF classifiers and causal LMs
        mapping = _peft().utils.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
        return tuple(mapping.get(model_type, ("query", "value", "q_proj", "v_proj")))
    return None  # every Linear layer of the trunk


def _hf_conv1d(m: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2's projections: a Linear with its weight transposed); peft adapts it."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf")


def lora_targets(model: nn.Module, target_modules: tuple[str, ...] = ()) -> list[str]:
    """Full names of the layers that get adapters (never the head or its companions)."""
    anat = anatomy(model)
    head_side = [anat.head, *anat.head_extra]
    kinds = (nn.Linear, nn.Conv2d) if target_modules else (nn.Linear,)
    suffixes = target_modules or _default_suffixes(model)
    out = []
    for name, m in model.named_modules():
        if not name or any(name == h or name.startswith(h + ".") for h in head_side):
            continue
        if not (isinstance(m, kinds) or _hf_conv1d(m)) or name.endswith(".base_layer"):
            continue
        if suffixes is None or any(name == s or name.endswith("." + s) for s in suffixes):
            out.append(name)
    if not out:
        what = f"target_modules {list(target_modules)}" if target_modules else "the default targets"
        raise ConfigError(
            f"lora: {what} match no Linear/Conv2d layer of {type(model).__name__} outside its head; "
            "name layers in lora.target_modules"
        )
    return out


def add_lora_(model: nn.Module, config: LoRAConfig | None = None) -> list[str]:
    """Inject LoRA adapters in place; afterwards only the adapters and the head require grad (only the
    adapters for a causal LM, whose head is pretrained). Returns the adapted layers' names."""
    config = config or LoRAConfig()
    if has_lora(model):
        raise ConfigError("the model already has LoRA adapters; merge them first (merge_lora_)")
    peft = _peft()
    targets = lora_targets(model, config.target_modules)
    peft_config = peft.LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets, bias="none"
    )
    peft.inject_adapter_in_model(peft_config, model)
    anat = anatomy(model)
    head = {id(p) for p in anat.head_params(model)} if anat.lora_trains_head else set()
    for name, p in model.named_parameters():
        p.requires_grad_(LORA_MARK in name or id(p) in head)
    return targets


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if LORA_MARK in n}


def merge_lora_(model: nn.Module) -> int:
    """Fold every adapter into its layer's weight and put the plain layer back; every parameter requires
    grad again. Returns the number of merged layers (0 when there were none)."""
    adapters = [(n, m) for n, m in model.named_modules() if _is_adapter(m)]
    for name, m in adapters:
        m.merge()
        base = m.get_base_layer()
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, base)
    if adapters:
        for p in model.parameters():
            p.requires_grad_(True)
    return len(adapters)
