"""Models: a registry of architectures, pretrained loaders, and pickle-free save/load."""

from slimtune.models.fuse import fold_batchnorm_
from slimtune.models.registry import MODELS, PRETRAINED, build, rebuild
from slimtune.models.serialization import load_model, load_torch_checkpoint, save_model

__all__ = [
    "MODELS",
    "PRETRAINED",
    "build",
    "fold_batchnorm_",
    "load_model",
    "load_torch_checkpoint",
    "rebuild",
    "save_model",
]
