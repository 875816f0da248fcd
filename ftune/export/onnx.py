"""`ftune export format=onnx`: encoder tasks (token and sequence classification, QA) as one model.onnx.

optimum's exporter does not support transformers 5 yet, so the model goes through `torch.onnx.export`
(the dynamo exporter) with dynamic batch and sequence axes. Before the folder is published, onnxruntime
runs it on real validation examples at two shapes; the outputs must agree with PyTorch's within the
tolerance and give the same argmax, or the export is refused. The folder holds model.onnx, the tokenizer,
config.json (labels) and ftune.json (the task settings): onnxruntime and tokenizers alone can run it, and
`ftune predict|serve model=<folder> runtime=onnx` do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftune.errors import FtuneError
from ftune.export import check_batches, torch_outputs
from ftune.tasks.base import Task

log = logging.getLogger("ftune")
TOLERANCE = 1e-4  # fp32 both sides; measured differences are ~1e-6 (docs/serving.md)


class _Outputs(torch.nn.Module):
    """The model with a tuple of named outputs (what the ONNX graph returns), inputs by keyword."""

    def __init__(self, model: Any, input_names: list[str], output_names: list[str]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        outputs = self.model(**{name: given[name] for name in self.input_names})
        return tuple(outputs[name] for name in self.output_names)


def export_onnx(task: Task, tokenizer: Any, model: Any, reference: Any, out: Path, opset: int,
                tolerance: float | None, check: bool) -> dict:
    """Write model.onnx (+ tokenizer, config) into `out`; `reference` is the run's model as loaded (an
    adapter model before merging), whose outputs the ONNX graph must reproduce."""
    if task.onnx_outputs is None:  # the task's fact: what its graph returns, None where there is no ONNX export
        raise FtuneError(f"format=onnx covers encoder tasks, not task={task.name}", where="format",
                         fix="use format=hf, or format=gguf for a Llama-family sft run")
    onnxruntime = _require("onnxruntime")
    _require("onnxscript")
    tolerance = TOLERANCE if tolerance is None else tolerance
    batches = check_batches(task, tokenizer)
    expected = [torch_outputs(reference, inputs) for inputs in batches] if check else None
    model = model.float().eval()
    inputs = batches[-1]
    input_names = list(inputs)
    output_names = list(torch_outputs(model, inputs))
    if set(input_names) - {"input_ids", "attention_mask", "token_type_ids"}:
        raise FtuneError(f"format=onnx takes input_ids, attention_mask, token_type_ids; this task feeds {input_names}",
                         where="format", fix="use format=hf")
    dynamic = torch.export.Dim.DYNAMIC
    shapes = {name: {0: dynamic, 1: dynamic} for name in input_names}  # the outputs' axes follow from them
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(_Outputs(model, input_names, output_names).eval(), (), str(path),
                          kwargs={n: inputs[n] for n in input_names}, input_names=input_names,
                          output_names=output_names, opset_version=opset, dynamic_shapes=shapes, dynamo=True,
                          external_data=False, verbose=False, optimize=False)
    result = {"format": "onnx", "opset": opset, "inputs": input_names, "outputs": output_names}
    if check:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        difference = 0.0
        for inputs, wanted in zip(batches, expected, strict=True):
            got = session.run(output_names, {n: inputs[n].numpy() for n in input_names})
            for name, value in zip(output_names, got, strict=True):
                value = torch.from_numpy(np.asarray(value, dtype=np.float32))
                difference = max(difference, (value - wanted[name]).abs().max().item())
                same_argmax = value.shape[-1] == 1 or torch.equal(value.argmax(-1), wanted[name].argmax(-1))
                if difference > tolerance or not same_argmax:
                    raise FtuneError(f"the ONNX model's `{name}` differs from PyTorch's by {difference:.2e} "
                                     f"(tolerance {tolerance:.0e}{'' if same_argmax else ', argmax differs'}) on "
                                     f"inputs of shape {tuple(inputs['input_ids'].shape)}", where="format=onnx",
                                     fix="nothing was written; report it, or export format=hf")
        shapes = [tuple(b["input_ids"].shape) for b in batches]
        log.info("ONNX model checked with onnxruntime: max |output difference| %.2e at shapes %s", difference, shapes)
        result.update(max_difference=difference, tolerance=tolerance, checked_shapes=shapes)
    model.config.save_pretrained(out)  # labels (id2label) for whoever runs the folder
    tokenizer.save_pretrained(out)
    return result


class OnnxModel(torch.nn.Module):
    """An onnxruntime session behind a transformers-like forward(**inputs) -> outputs, so the engine and the
    task's decode run on it unchanged (it has no parameters; inputs go through numpy)."""

    def __init__(self, path: Path, output_names: list[str]):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = output_names

    def forward(self, **inputs):
        from transformers.utils import ModelOutput

        feed = {name: inputs[name].cpu().numpy() for name in self.input_names if name in inputs}
        values = self.session.run(self.output_names, feed)
        return ModelOutput({name: torch.from_numpy(v) for name, v in zip(self.output_names, values, strict=True)})


def load_onnx_model(task: Any, folder: Path) -> tuple[OnnxModel, Any]:
    """(model, tokenizer) of a folder written by `ftune export format=onnx`."""
    import json

    from transformers import AutoConfig

    from ftune.models import load_tokenizer

    _require("onnxruntime")
    if not (folder / "model.onnx").is_file():
        raise FtuneError(f"no model.onnx in {folder}", where="runtime=onnx",
                         fix="export first: ftune export run_dir=<run> format=onnx out=<folder>, then model=<folder>")
    if task.has_labels:
        config = AutoConfig.from_pretrained(str(folder))
        task.labels = [config.id2label[i] for i in range(len(config.id2label))]
    tokenizer = load_tokenizer(str(folder))
    task.bind_tokenizer(tokenizer)
    meta = json.loads((folder / "ftune.json").read_text()) if (folder / "ftune.json").is_file() else {}
    outputs = meta.get("export", {}).get("outputs") or list(task.onnx_outputs or ("logits",))
    return OnnxModel(folder / "model.onnx", outputs), tokenizer


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise FtuneError(f"{module} is not installed", where="format=onnx",
                         fix="pip install 'ftune[serve]' (onnx, onnxscript, onnxruntime)") from error
