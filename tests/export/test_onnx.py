"""`ftune export format=onnx`: checked with onnxruntime before it is written; runs without torch; runtime=onnx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import deploy_fixtures as F
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # exports and runs ONNX graphs end to end: make test, not make test-unit

pytest.importorskip("onnxruntime")
INPUTS = {"ner": ["Angela Merkel visited Paris .", "the cat sat on the mat", ""],
          "classification": ["a great and moving film", "an awful mess", "nothing works here"],
          "qa": [json.dumps({"question": "Who won?", "context": F.QA_CONTEXT}),
                 json.dumps({"question": "Where?", "context": F.QA_CONTEXT})]}


def _predict(tmp_path: Path, lines: list[str], *args: str) -> list[dict]:
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    run_cli("predict", *args, f"input={source}", f"output={target}")
    return [json.loads(line) for line in target.read_text().splitlines()]


def _same(torch_rows: list[dict], onnx_rows: list[dict]) -> None:
    """Same labels/entities/answers; scores within rounding."""
    def strip(row):
        return json.loads(json.dumps(row), parse_float=lambda v: round(float(v), 3))
    assert [strip(r) for r in torch_rows] == [strip(r) for r in onnx_rows]


@pytest.mark.parametrize("task", ["ner", "classification", "qa"])
def test_onnx_export_predicts_like_pytorch(task, request, tmp_path):
    run = request.getfixturevalue(f"{task}_run")
    out = tmp_path / "onnx"
    run_cli("export", f"run_dir={run}", "format=onnx", f"out={out}")
    assert {"model.onnx", "config.json", "tokenizer.json", "ftune.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "ftune.json").read_text())
    assert meta["export"]["max_difference"] <= meta["export"]["tolerance"] == 1e-4
    assert len({tuple(s) for s in meta["export"]["checked_shapes"]}) == 2  # two shapes
    torch_rows = _predict(tmp_path, INPUTS[task], f"run_dir={run}")
    onnx_rows = _predict(tmp_path, INPUTS[task], f"model={out}", "runtime=onnx")  # task from ftune.json
    if task == "qa":  # the tiny untrained model's span scores tie (~0.05 each): spans may swap, scores may not
        assert [(r["id"], round(r["score"], 3)) for r in torch_rows] == [(r["id"], round(r["score"], 3)) for r in onnx_rows]
    else:
        _same(torch_rows, onnx_rows)


def test_a_corrupted_weight_is_refused_and_nothing_is_written(ner_run, tmp_path, monkeypatch, capsys):
    import torch

    real_export = torch.onnx.export

    def corrupted(module, *args, **kwargs):
        with torch.no_grad():
            module.model.classifier.weight[0] += 0.5  # the graph now computes other logits
        return real_export(module, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", corrupted)
    from tests.inference.test_saved_settings import _cli_exit

    out = tmp_path / "onnx"
    assert _cli_exit("export", f"run_dir={ner_run}", "format=onnx", f"out={out}") == 2
    assert "the ONNX model's `logits` differs from PyTorch's" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


@pytest.mark.slow
def test_the_folder_runs_with_onnxruntime_alone(ner_run, tmp_path):
    out = tmp_path / "onnx"
    run_cli("export", f"run_dir={ner_run}", "format=onnx", f"out={out}")
    script = f"""
import json, sys
sys.modules["torch"] = None  # importing torch would fail: the folder must not need it
import numpy as np, onnxruntime
from tokenizers import Tokenizer
folder = {str(out)!r}
tokenizer = Tokenizer.from_file(folder + "/tokenizer.json")
labels = json.load(open(folder + "/config.json"))["id2label"]
encoding = tokenizer.encode("Angela Merkel visited Paris .")
session = onnxruntime.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
feed = {{"input_ids": np.array([encoding.ids]), "attention_mask": np.array([encoding.attention_mask])}}
logits = session.run(["logits"], feed)[0]
print(json.dumps([labels[str(i)] for i in logits[0].argmax(-1)]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tags = json.loads(result.stdout)
    assert len(tags) >= 7 and all(tag in json.loads((out / "config.json").read_text())["id2label"].values()
                                  for tag in tags)


def test_onnx_refusals(sft_run, ner_run, tmp_path, capsys):
    from tests.inference.test_saved_settings import _cli_exit

    assert _cli_exit("export", f"run_dir={sft_run}", "format=onnx", f"out={tmp_path / 'x'}") == 2
    assert "format=onnx covers encoder tasks, not task=sft" in capsys.readouterr().err
    assert _cli_exit("predict", f"run_dir={ner_run}", "runtime=onnx") == 2
    assert "no model.onnx" in capsys.readouterr().err
    assert _cli_exit("export", f"run_dir={ner_run}", "format=tflite", f"out={tmp_path / 'x'}") == 2
    assert not (tmp_path / "x").exists()
