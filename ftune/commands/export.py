"""`ftune export`: a run's model as a standalone folder, in one of three formats.

format=hf   a transformers folder; a PEFT adapter as is, or merged into its base with merge=true
format=onnx model.onnx for encoder tasks, checked with onnxruntime (ftune/export/onnx.py)
format=gguf one .gguf file for Llama-family causal LMs, checked by reading it back (ftune/export/gguf.py)

Every export is checked against the run's model on its own examples (check=false skips it) and written
to a hidden folder first: what ships predicts what the run predicted, or nothing is written. Each folder
gets ftune.json (task settings, source run, the check's figures), so `ftune predict|serve model=<folder>`
need no task=.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ftune import __version__, card, peft
from ftune.errors import FtuneError
from ftune.export import check_batches, torch_outputs
from ftune.inference import Inference
from ftune.run_dir import RunDir

log = logging.getLogger("ftune")
TOLERANCE = 1e-4  # fp32 merge of a low-rank update: differences are rounding, ~1e-6
FORMATS = ("hf", "onnx", "gguf")
# A QLoRA adapter is merged into the full-precision base, which the trained model never saw: its outputs
# differ from the quantised adapter model's by the quantisation error itself, not by a merge mistake. That
# gap is measured and reported, and refused only when it is gross: a mean |difference| above this share of
# the mean |output| (NF4/int8 weights are within a few percent of the originals; docs/scaling.md).
QUANTIZED_TOLERANCE = 0.25


def run(cfg: DictConfig) -> dict:
    # a Python caller may pass only the keys of format=hf (run_dir, out, checkpoint, merge, check, overwrite)
    cfg = OmegaConf.merge({"format": "hf", "tolerance": None, "opset": 18, "gguf_dtype": "f32", "task": None}, cfg)
    out = Path(cfg.out)
    if cfg.format not in FORMATS:
        raise FtuneError(f"unknown format `{cfg.format}`", where="format", fix=f"choose from: {', '.join(FORMATS)}")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FtuneError(f"{out} already exists and is not empty", where="out",
                         fix="pick another folder, or overwrite=true to replace it")
    inference = Inference.load(OmegaConf.create({"run_dir": cfg.run_dir, "task": cfg.get("task"),
                                                 "checkpoint": cfg.checkpoint, "precision": "fp32"}))
    task, tokenizer, model, folder = inference.task, inference.tokenizer, inference.model, inference.folder
    adapter = peft.is_adapter_folder(folder)
    method = peft.adapter_method(folder) if adapter else None
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    result = {"run_dir": str(inference.run_dir), "source": str(folder), "out": str(out), "format": cfg.format,
              "merged": False}
    try:
        if cfg.format == "hf":
            result.update(_export_hf(task, tokenizer, model, folder, tmp, cfg, adapter, method, inference.run_dir))
        else:
            reference = model
            if adapter:  # outputs of the adapter model first: merging changes the module in place
                reference = _Frozen(task, tokenizer, model) if cfg.check else None
                model = peft.merge(model, method)
                result["merged"] = True
            if cfg.format == "onnx":
                from ftune.export.onnx import export_onnx

                result.update(export_onnx(task, tokenizer, model, reference, tmp, cfg.opset, cfg.tolerance, cfg.check))
            else:
                from ftune.export.gguf import export_gguf

                result.update(export_gguf(inference, model, tmp, cfg.gguf_dtype, cfg.check))
        _write_meta(tmp, task, inference, result)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    if cfg.format == "hf":  # README.md: metrics, data, how to load (the card speaks of transformers folders)
        card.write_card(out, run_dir=inference.run_dir, merged=result["merged"])
    kind = {"onnx": "ONNX model", "gguf": "GGUF model"}.get(cfg.format) or (
        "merged model" if result["merged"] else ("PEFT adapter (load with peft)" if adapter else "model"))
    log.info("exported %s to %s", kind, out)
    return result


def _export_hf(task, tokenizer, model, folder: Path, tmp: Path, cfg: DictConfig, adapter: bool, method,
               run_dir: Path | None) -> dict:
    result: dict = {"merged": False}
    if adapter and cfg.merge:
        batches = check_batches(task, tokenizer, sizes=(16,)) if cfg.check else []
        trained = [torch_outputs(model, inputs) for inputs in batches]
        quantized = _quantization(run_dir)
        if quantized:  # merge into the full-precision base: folding into 4/8-bit weights would round the update
            model = _full_precision(task, folder, run_dir)
            before = [torch_outputs(model, inputs) for inputs in batches]
        else:
            before = trained
        merged = peft.merge(model, method)
        if batches:
            after = torch_outputs(merged, batches[0])
            if quantized:
                result.update(_quantization_gap(trained[0], after, quantized))
            tolerance = TOLERANCE if cfg.tolerance is None else cfg.tolerance
            difference = _max_difference(before[0], after)
            if difference > tolerance:
                raise FtuneError(f"the merged model's outputs differ from the adapter's by {difference:.2e}",
                                 where="merge", fix="export with merge=false and load the adapter with peft")
            log.info("merged model checked: max |output difference| %.2e on %d examples", difference,
                     len(batches[0]["input_ids"]))
            result["max_difference"] = difference
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        result["merged"] = True
    else:
        if cfg.merge:
            log.info("%s is a full model, not an adapter: exported as is", folder)
        shutil.copytree(folder, tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's generated model card says nothing about this run
    return result


class _Frozen:
    """The adapter model's outputs on the check batches, computed before merging (the ONNX check compares
    against them): a callable that answers those batches from memory."""

    def __init__(self, task, tokenizer, model):
        self.saved = [(inputs, torch_outputs(model, inputs)) for inputs in check_batches(task, tokenizer)]

    def eval(self):
        return self

    def __call__(self, **inputs):
        for known, outputs in self.saved:
            if all(inputs[k].shape == known[k].shape and bool((inputs[k] == known[k]).all()) for k in known):
                return outputs
        raise KeyError("inputs not among the check batches")


def _write_meta(tmp: Path, task, inference: Inference, result: dict) -> None:
    meta = {"ftune": __version__, "task": OmegaConf.to_container(task.cfg, resolve=True),
            "source_run": str(inference.run_dir), "source_model": str(inference.folder),
            "export": {k: v for k, v in result.items() if k not in ("run_dir", "source", "out")}}
    if inference.settings is not None:
        meta["base_model"] = inference.settings.model.name_or_path
    (tmp / "ftune.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def _quantization(run_dir: Path | None) -> str | None:
    return RunDir(run_dir).setting("model.quantization") if run_dir is not None else None


def _full_precision(task, folder: Path, run_dir: Path):
    """The run's adapter on its base model loaded unquantised (fp32)."""
    from ftune.models import locate

    base = RunDir(run_dir).config().model.name_or_path
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
