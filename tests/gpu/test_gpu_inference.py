"""eval, predict and chat on CUDA; ONNX export of a GPU-trained run, checked on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import run_cli
from tests.gpu.conftest import source_env

pytestmark = pytest.mark.gpu


def _same_entities(a: list[dict], b: list[dict]) -> None:
    """The same entity spans and types; scores within 1e-3 (two devices, or two runtimes)."""
    def spans(rows):
        return [[(e["type"], e["text"], e.get("start")) for e in row["entities"]] for row in rows]

    assert spans(a) == spans(b)
    scores = [e["score"] for row in a for e in row["entities"]]
    assert scores == pytest.approx([e["score"] for row in b for e in row["entities"]], abs=1e-3)


@pytest.fixture
def engine_devices(monkeypatch):
    """The device of every Engine built in this test (train, eval, predict)."""
    from ftune.engine.loop import Engine

    devices: list[str] = []
    init = Engine.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        devices.append(self.device.type)

    monkeypatch.setattr(Engine, "__init__", recording_init)
    return devices


def test_sft_eval_predict_and_chat_on_cuda(sft_overrides, engine_devices, tmp_path):
    run = tmp_path / "run"
    run_cli("train", *sft_overrides, "task.eval_generate=true", f"run_dir={run}")  # bf16 on a bf16 GPU (auto)
    results = json.loads((run / "results.json").read_text())
    assert results["precision"] in ("bf16", "fp16") and "exact_match" in results["validation"]

    run_cli("eval", f"run_dir={run}", "device=cuda")
    evaluated = json.loads((run / "eval_validation.json").read_text())
    assert evaluated["loss"] == pytest.approx(results["validation"]["loss"], rel=1e-3)
    assert evaluated["exact_match"] == pytest.approx(results["validation"]["exact_match"])

    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("what colour is the sky ?\n" + json.dumps({"messages": [{"role": "user", "content": "hello"}]}) + "\n")
    run_cli("predict", f"run_dir={run}", "device=cuda", f"input={source}", f"output={target}")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["response"], str) for r in rows)
    assert engine_devices and set(engine_devices) == {"cuda"}, engine_devices

    done = subprocess.run([sys.executable, "-m", "ftune", "chat", f"run_dir={run}", "device=cuda", "max_new_tokens=4"],
                          input="hello\n/reset\nwhat colour is the sky ?\n", capture_output=True, text=True,
                          env=source_env(), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("\n") == 2  # one streamed reply per message


def test_ner_eval_and_predict_on_cuda_match_the_cpu(ner_overrides, engine_devices, tmp_path):
    run = tmp_path / "run"
    run_cli("train", *ner_overrides, "trainer.precision=bf16", f"run_dir={run}")
    results = json.loads((run / "results.json").read_text())
    run_cli("eval", f"run_dir={run}", "device=cuda")
    assert json.loads((run / "eval_validation.json").read_text())["f1"] == pytest.approx(results["validation"]["f1"])
    source = tmp_path / "in.txt"
    source.write_text("Angela Merkel visited Paris .\nthe cat sat on the mat\n")
    rows = {}
    for device in ("cuda", "cpu"):  # fp32 on both: the same entities
        target = tmp_path / f"{device}.jsonl"
        run_cli("predict", f"run_dir={run}", f"device={device}", "precision=fp32", f"input={source}", f"output={target}")
        rows[device] = [json.loads(line) for line in target.read_text().splitlines()]
    _same_entities(rows["cuda"], rows["cpu"])
    assert "cuda" in engine_devices and "cpu" in engine_devices


def test_onnx_export_of_a_cuda_trained_run_is_checked_on_the_cpu(ner_overrides, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = tmp_path / "run"
    run_cli("train", *ner_overrides, "trainer.precision=bf16", f"run_dir={run}")
    out = tmp_path / "onnx"
    run_cli("export", f"run_dir={run}", "format=onnx", f"out={out}")
    meta = json.loads((out / "ftune.json").read_text())
    assert meta["export"]["max_difference"] <= meta["export"]["tolerance"]  # onnxruntime (CPU) against PyTorch
    source = tmp_path / "in.txt"
    source.write_text("Angela Merkel visited Paris .\nthe cat sat on the mat\n\n")
    rows = {}
    for name, args in {"torch": [f"run_dir={run}", "device=cuda", "precision=fp32"],
                       "onnx": [f"model={out}", "runtime=onnx"]}.items():
        target = tmp_path / f"{name}.jsonl"
        run_cli("predict", *args, f"input={source}", f"output={target}")
        rows[name] = [json.loads(line) for line in target.read_text().splitlines()]
    _same_entities(rows["torch"], rows["onnx"])
