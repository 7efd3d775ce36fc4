"""The one training loop and the tasks/callbacks that plug into it."""

from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.loop import FitResult, TrainConfig, fit, predict
from slimtune.train.tasks import ClassificationTask, Task

__all__ = [
    "Callback",
    "ClassificationTask",
    "FitResult",
    "LoopState",
    "Task",
    "TrainConfig",
    "fit",
    "predict",
]
