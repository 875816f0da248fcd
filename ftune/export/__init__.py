"""Export formats beyond a transformers folder: ONNX (encoder tasks) and GGUF (Llama-family causal LMs).

Each exporter checks what it wrote against the PyTorch model it came from, on the run's own examples,
and refuses (FtuneError) before the folder is published when they disagree.
"""

from __future__ import annotations

from typing import Any

import torch

from ftune.errors import FtuneError


def check_examples(task: Any, limit: int = 32) -> list[dict]:
    """Real examples to check an export on: the run's validation split, else test, else train."""
    for split in ("validation", "test", "train"):
        examples = task.load_split(split)
        if examples:
            return examples[:limit]
    raise FtuneError("no examples to check the export on", where="task.data.validation",
                     fix="the run's data files must still exist (or pass task.data.validation=<file>), or check=false")


def check_batches(task: Any, tokenizer: Any, sizes: tuple[int, ...] = (2, 8)) -> list[dict]:
    """Model inputs of real examples at several shapes (batch sizes and padded lengths differ)."""
    features = task.featurize(check_examples(task), tokenizer)
    batches, start = [], 0
    for size in sizes:
        chunk = features[start:start + size] or features[:size]
        start += size
        batches.append(task.collate(chunk)["inputs"])
    return batches


@torch.inference_mode()
def torch_outputs(model: Any, inputs: dict) -> dict[str, torch.Tensor]:
    model.eval()
    outputs = model(**inputs)
    return {k: v.float().clone() for k, v in outputs.items() if torch.is_tensor(v) and k != "loss"}
