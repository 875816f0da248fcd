"""`ftune export`: a run's model as a standalone folder, a PEFT adapter merged into its base on request.

The merged model is checked against the adapter model it came from: both run on validation examples
and their outputs must agree (max |difference| is logged and returned), so what ships predicts what the
run predicted.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ftune import card, peft
from ftune import run as R
from ftune.errors import FtuneError

log = logging.getLogger("ftune")
TOLERANCE = 1e-4  # fp32 merge of a low-rank update: differences are rounding, ~1e-6


def run(cfg: DictConfig) -> dict:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FtuneError(f"{out} already exists and is not empty", where="out",
                         fix="pick another folder, or overwrite=true to replace it")
    load = OmegaConf.create({"run_dir": cfg.run_dir, "model_dir": None, "task": None, "checkpoint": cfg.checkpoint})
    task, tokenizer, model, _, run_dir, folder = R.load_inference(load)
    adapter = peft.is_adapter_folder(folder)
    method = peft.adapter_method(folder) if adapter else None
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    result = {"run_dir": str(run_dir), "source": str(folder), "out": str(out), "merged": False}
    if adapter and cfg.merge:
        inputs = _check_inputs(task, tokenizer) if cfg.check else None
        before = _outputs(model, inputs) if inputs else None
        merged = peft.merge(model, method)
        if inputs:
            difference = _max_difference(before, _outputs(merged, inputs))
            if difference > TOLERANCE:
                raise FtuneError(f"the merged model's outputs differ from the adapter's by {difference:.2e}",
                                 where="merge", fix="export with merge=false and load the adapter with peft")
            log.info("merged model checked: max |output difference| %.2e on %d examples", difference,
                     len(inputs["input_ids"]))
            result["max_difference"] = difference
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        result["merged"] = True
    else:
        if cfg.merge:
            log.info("%s is a full model, not an adapter: exported as is", folder)
        shutil.copytree(folder, tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's generated model card says nothing about this run
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    card.write_card(out, run_dir=run_dir, merged=result["merged"])  # README.md: metrics, data, how to load
    kind = "merged model" if result["merged"] else ("PEFT adapter (load with peft)" if adapter else "model")
    log.info("exported %s to %s", kind, out)
    return result


def _check_inputs(task, tokenizer) -> dict | None:
    """A batch of up to 16 validation examples (or training ones), as model inputs."""
    for split in ("validation", "test", "train"):
        examples = task.load_split(split)
        if examples:
            features = task.featurize(examples[:16], tokenizer)[:16]
            return task.collate(features)["inputs"] if features else None
    return None


@torch.inference_mode()
def _outputs(model, inputs: dict) -> dict[str, torch.Tensor]:
    model.eval()
    outputs = model(**inputs)
    return {k: v.float().clone() for k, v in outputs.items() if torch.is_tensor(v) and k != "loss"}


def _max_difference(before: dict, after: dict) -> float:
    return max((before[k] - after[k]).abs().max().item() for k in before)
