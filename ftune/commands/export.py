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
# A QLoRA adapter is merged into the full-precision base, which the trained model never saw: its outputs
# differ from the quantised adapter model's by the quantisation error itself, not by a merge mistake. That
# gap is measured and reported, and refused only when it is gross: a mean |difference| above this share of
# the mean |output| (NF4/int8 weights are within a few percent of the originals; docs/scaling.md).
QUANTIZED_TOLERANCE = 0.25


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
    quantized = _quantization(run_dir)
    if adapter and cfg.merge:
        inputs = _check_inputs(task, tokenizer) if cfg.check else None
        trained = _outputs(model, inputs) if inputs else None
        if quantized:  # merge into the full-precision base: folding into 4/8-bit weights would round the update
            model = _full_precision(task, folder, run_dir)
            before = _outputs(model, inputs) if inputs else None
        else:
            before = trained
        merged = peft.merge(model, method)
        if inputs:
            after = _outputs(merged, inputs)
            if quantized:
                result.update(_quantization_gap(trained, after, quantized))
            difference = _max_difference(before, after)
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


def _quantization(run_dir: Path | None) -> str | None:
    saved = run_dir / "config.yaml" if run_dir is not None else None
    return OmegaConf.select(OmegaConf.load(saved), "model.quantization") if saved and saved.is_file() else None


def _full_precision(task, folder: Path, run_dir: Path):
    """The run's adapter on its base model loaded unquantised (fp32)."""
    from ftune.models import locate

    base = OmegaConf.load(run_dir / "config.yaml").model.name_or_path
    return peft.load_trained(task.build_model(locate(base)), folder)


def _quantization_gap(quantized_outputs: dict, merged_outputs: dict, method: str) -> dict:
    """How far the merged full-precision model is from the quantised adapter model it came from."""
    gap = _max_difference(quantized_outputs, merged_outputs)
    mean = max(float((quantized_outputs[k] - merged_outputs[k]).abs().mean()) for k in quantized_outputs)
    scale = max(float(quantized_outputs[k].abs().mean()) for k in quantized_outputs) or 1.0
    log.info("merged into the full-precision base: vs the %s adapter model max |output difference| %.3g, "
             "mean %.3g (%.1f%% of the mean |output|; tolerance %.0f%%)", method, gap, mean, 100 * mean / scale,
             100 * QUANTIZED_TOLERANCE)
    if mean / scale > QUANTIZED_TOLERANCE:
        raise FtuneError(f"the merged full-precision model's outputs differ from the {method} adapter model's by "
                         f"{100 * mean / scale:.1f}% on average", where="merge",
                         fix="export with merge=false and serve the adapter on the quantised base")
    return {"quantization": method, "quantization_max_difference": gap, "quantization_mean_difference": mean,
            "quantization_relative_difference": mean / scale}


def _max_difference(before: dict, after: dict) -> float:
    return max((before[k] - after[k]).abs().max().item() for k in before)
