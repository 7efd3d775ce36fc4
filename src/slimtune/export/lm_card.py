"""MODEL_CARD.md for an LM bundle made by a recipe: how to generate with it, its parity, every stage's row."""

from __future__ import annotations

from typing import Any


def _parity(parity: dict[str, Any] | None) -> str:
    if not parity:
        return "not recorded"
    parts = []
    if "max_abs_diff" in parity:
        parts.append(f"max |Δ logits| {float(parity['max_abs_diff']):.3g}")
    if "top1_agreement" in parity:
        parts.append(f"top-1 agreement {100 * float(parity['top1_agreement']):.2f}%")
    if "greedy_identical" in parity:
        same = "identical" if parity["greedy_identical"] else "DIFFERENT"
        parts.append(f"greedy tokens {same} ({parity.get('greedy_prompts')} prompts × {parity.get('greedy_tokens')})")
    return ", ".join(parts)


def lm_model_card(manifest: dict[str, Any], report: Any) -> str:
    inp = manifest["input"]
    layers = inp.get("layers") or []
    stages = "\n".join(f"{i}. **{r.name}**" for i, r in enumerate(report.rows, 1))
    env = report.env or {}
    chat = "yes" if manifest.get("chat_template") else "no"
    return f"""# Model card (causal LM)

Made by slimtune {manifest["slimtune_version"]} on {manifest["created"]}.

## Use

```python
from slimtune.runtime import LMGenerator   # onnxruntime + numpy + tokenizers, not torch
LMGenerator("path/to/this/folder").generate("Once upon a time")
```

or `slimtune generate THIS_FOLDER "prompt"` and `slimtune bench THIS_FOLDER`.

- **Model**: {inp.get("model_type")}, {len(layers)} decoder blocks, vocabulary {inp.get("vocab_size")}, context
  {inp.get("context_length")} tokens, {manifest.get("parameters")} parameters; chat template: {chat}
- **Precision**: {manifest["precision"]}; KV-cache decoder (model.onnx), tokenizer.json
- **Generation defaults**: {manifest.get("generation")}
- **Parity with PyTorch**: {_parity(manifest.get("parity"))}

## What was done

{stages or "exported directly"}

## Metrics of every stage (measured on this machine)

{report.table()}

## Environment

{env.get("platform", "")}; {env.get("cpu_count", "?")} CPU cores

The full report is beside this card: report.md, report.html, report.json.
"""
