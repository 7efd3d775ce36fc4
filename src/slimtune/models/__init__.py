"""Models: a registry of architectures, pretrained loaders, and pickle-free save/load."""

from slimtune.models.fuse import fold_batchnorm_
from slimtune.models.lm import CAUSAL_LMS, is_lm, lm_tokenizer, load_lm
from slimtune.models.lm_io import save_hf_folder
from slimtune.models.registry import MODELS, PRETRAINED, build, rebuild
from slimtune.models.serialization import load_model, load_torch_checkpoint, save_model

__all__ = [
    "CAUSAL_LMS",
    "MODELS",
    "PRETRAINED",
    "build",
    "fold_batchnorm_",
    "is_lm",
    "lm_tokenizer",
    "load_lm",
    "load_model",
    "load_torch_checkpoint",
    "rebuild",
    "save_hf_folder",
    "save_model",
]
