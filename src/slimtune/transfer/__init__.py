"""Transfer learning: new heads, freeze policies, gradual unfreezing, discriminative learning rates,
LoRA adapters (merged back into plain weights), and multi-task learning over one shared trunk."""

from slimtune.transfer.anatomy import Anatomy, anatomy, register_anatomy
from slimtune.transfer.finetune import FinetuneConfig, finetune_, prepare_finetune_
from slimtune.transfer.freeze import FreezeCallback, depth_param_groups, freeze_, keep_frozen_norms_eval_
from slimtune.transfer.heads import head_of, num_classes_of, replace_head_, set_head_
from slimtune.transfer.lora import LoRAConfig, add_lora_, has_lora, lora_parameters, merge_lora_
from slimtune.transfer.multitask import (
    MultiTaskConfig,
    MultiTaskModel,
    MultiTaskResult,
    TaskSpec,
    evaluate_tasks,
    export_task,
    fit_multitask,
    multitask_model,
)

__all__ = [
    "Anatomy",
    "FinetuneConfig",
    "FreezeCallback",
    "LoRAConfig",
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskResult",
    "TaskSpec",
    "add_lora_",
    "anatomy",
    "depth_param_groups",
    "evaluate_tasks",
    "export_task",
    "finetune_",
    "fit_multitask",
    "freeze_",
    "has_lora",
    "head_of",
    "keep_frozen_norms_eval_",
    "lora_parameters",
    "merge_lora_",
    "multitask_model",
    "num_classes_of",
    "prepare_finetune_",
    "register_anatomy",
    "replace_head_",
    "set_head_",
]
