"""MODEL_CARD.md for a deploy bundle: what was done, the metrics of every stage, parity, environment."""

from __future__ import annotations

import json
from typing import Any


def _fmt_parity(parity: dict[str, Any]) -> str:
    if not parity:
        return "not recorded"
    parts = []
    if "argmax_agreement" in parity:
        parts.append(f"argmax agreement {100 * float(parity['argmax_agreement']):.2f}%")
    if "max_abs_diff" in parity:
        parts.append(f"max |Δ logits| {float(parity['max_abs_diff']):.3g}")
    if "accuracy_delta" in parity:
        parts.append(f"accuracy change {-float(parity['accuracy_delta']):+.2f} pt")
    if "n" in parity:
        parts.append(f"on {int(parity['n'])} test inputs")
    return ", ".join(parts)


def model_card(manifest: dict[str, Any], report: Any) -> str:
    inp = manifest["input"]
    if inp["kind"] == "lm":
        from slimtune.export.lm_card import lm_model_card

        return lm_model_card(manifest, report)
    labels = manifest["output"]["labels"]
    if inp["kind"] == "text":
        tok = inp["tokenizer"]
        contract = f"text; {tok['type']} tokenizer (tokenizer.json), padded/truncated to {tok['max_length']} tokens"
    else:
        contract = f"{inp['kind']} arrays shaped {tuple(inp['shape'])}, float32"
        if "pixel_scale" in inp:
            contract += f"; raw integer pixels are multiplied by {inp['pixel_scale']:g}"
    rows = report.rows
    stages = "\n".join(
        f"{i}. **{r.name}**" + (f": {_stage_detail(r.extra)}" if _stage_detail(r.extra) else "")
        for i, r in enumerate(rows, 1)
    )
    env = report.env or {}
    packages = env.get("packages", {})
    env_line = ", ".join(f"{k} {v}" for k, v in packages.items() if v) if isinstance(packages, dict) else ""
    return f"""# Model card

Made by slimtune {manifest["slimtune_version"]} on {manifest["created"]} from data `{manifest.get("data")}`.

## Use

```python
from slimtune.runtime import Predictor   # needs onnxruntime + numpy (+ tokenizers for text), not torch
predictor = Predictor("path/to/this/folder")
predictor.predict(inputs)                # one dict per input: label, probability, top-k
```

or `slimtune predict THIS_FOLDER INPUT` and `slimtune bench THIS_FOLDER`.

- **Input**: {contract}
- **Output**: logits over {len(labels)} labels: {", ".join(map(str, labels[:20]))}{" ..." if len(labels) > 20 else ""}
- **Precision**: {manifest["precision"]}
- **Parity with PyTorch**: {_fmt_parity(manifest.get("parity", {}))}

## What was done

{stages or "exported directly"}

## Metrics of every stage (measured on this machine)

{report.table()}

## Environment

{env.get("platform", "")}; {env.get("cpu_count", "?")} CPU cores; {env_line}

The full report is beside this card: report.md, report.html, report.json.
"""


def _stage_detail(extra: dict[str, Any]) -> str:
    keys = ("method", "quantization", "prune", "sparsity", "kd", "mixed_precision")
    parts = {k: extra[k] for k in keys if k in extra}
    if "prune" in parts and not parts.get("sparsity"):  # structured pruning: its ratio, targets and MACs say it
        parts.pop("sparsity", None)
    if not parts:
        return ""
    text = json.dumps(parts, default=str)
    return f"`{text[:300]}{'...' if len(text) > 300 else ''}`"
