"""Generative tasks through the command line: train → eval → predict (in-process), chat through a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_data

pytestmark = pytest.mark.slow  # generative tasks and chat through the whole CLI: make test, not make test-unit

CHAT = [{"role": "user", "content": "what colour is the sky ?"}, {"role": "assistant", "content": "blue"},
        {"role": "user", "content": "and the cat ?"}, {"role": "assistant", "content": "the cat sat on the mat"}]
PAIRS = [("the cat sat on the mat", "a cat sat"), ("a dog ran in the park", "dog ran"),
         ("hello , how are you today ?", "fine , thank you")]



def _rows_out(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_llama_dir) -> Path:
    folder = tmp_path_factory.mktemp("sft")
    data = write_data(folder / "chat.jsonl", [{"messages": CHAT}, {"prompt": "hello", "response": "fine , thank you"}] * 4)
    run_cli("train", "task=sft", f"task.data.train={data}", f"task.data.validation={data}", "task.packing=true",
           "task.max_length=256",  # the tiny Llama's positions
           "task.eval_generate=true", "task.generation.max_new_tokens=4", f"model.name_or_path={tiny_llama_dir}",
           "model.name=tiny", "trainer.max_steps=2", "trainer.batch_size=4", "trainer.gradient_checkpointing=true",
           "logger.console=none", f"run_dir={folder / 'run'}")
    return folder / "run"


@pytest.mark.parametrize("task", ["summarization", "translation"])
def test_seq2seq_train_eval_predict(task, tmp_path, tiny_t5_dir):
    columns = ("document", "summary") if task == "summarization" else ("source", "target")
    data = write_data(tmp_path / "data.jsonl", [dict(zip(columns, pair, strict=True)) for pair in PAIRS * 3])
    run_dir = tmp_path / "run"
    run_cli("train", f"task={task}", f"task.data.train={data}", f"task.data.validation={data}",
           f"model.name_or_path={tiny_t5_dir}", "model.name=tiny", "task.generation.max_new_tokens=6",
           "task.generation.num_beams=2", "trainer.max_steps=2", "trainer.batch_size=4", "logger.console=none",
           f"run_dir={run_dir}")
    results = json.loads((run_dir / "results.json").read_text())
    main = "rougeL" if task == "summarization" else "bleu"
    assert results["main_metric"] == main and "loss" in results["validation"]
    assert (run_dir / "best" / "generation_config.json").exists()

    run_cli("eval", f"run_dir={run_dir}")
    evaluated = json.loads((run_dir / "eval_validation.json").read_text())
    assert evaluated[main] == pytest.approx(results["validation"][main])
    assert evaluated["loss"] == pytest.approx(results["validation"]["loss"], rel=1e-4)

    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text(f"the cat sat\n{json.dumps({columns[0]: 'a dog ran'})}\n")
    run_cli("predict", f"run_dir={run_dir}", f"input={source}", f"output={target}")
    rows = _rows_out(target)
    assert len(rows) == 2 and all(isinstance(r["generated"], str) for r in rows)


def test_sft_train_eval_predict(sft_run, tmp_path):
    results = json.loads((sft_run / "results.json").read_text())
    validation = results["validation"]
    assert results["main_metric"] == "loss" and {"perplexity", "exact_match", "token_f1"} <= set(validation)
    assert (sft_run / "best" / "chat_template.jinja").exists() or "chat_template" in (
        sft_run / "best" / "tokenizer_config.json").read_text()

    run_cli("eval", f"run_dir={sft_run}")
    evaluated = json.loads((sft_run / "eval_validation.json").read_text())
    assert evaluated["loss"] == pytest.approx(validation["loss"], rel=1e-4)
    assert evaluated["perplexity"] == pytest.approx(validation["perplexity"], rel=1e-4)

    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("what colour is the sky ?\n" + json.dumps({"messages": CHAT[:3]}) + "\n{\"messages\": 3}\n")
    run_cli("predict", f"run_dir={sft_run}", f"input={source}", f"output={target}")
    rows = _rows_out(target)
    assert len(rows) == 3 and isinstance(rows[0]["response"], str) and isinstance(rows[1]["response"], str)
    assert "error" in rows[2]


@pytest.mark.slow
def test_chat_through_a_pipe(sft_run):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "ftune", "chat", f"run_dir={sft_run}", "max_new_tokens=3"],
                          input="hello\n\n/reset\nwhat colour is the sky ?\n", capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    # one streamed reply (ending in a newline) per message; blank lines and /reset are not messages
    assert done.stdout.count("\n") == 2



@pytest.mark.parametrize("task", ["sft", "summarization"])
def test_lora_on_generative_models_trains_adapters_and_predicts(task, tmp_path, tiny_llama_dir, tiny_t5_dir):
    """peft=lora on a Llama-style causal LM and a T5: peft's default targets, no head to train in full,
    an adapter-only best/, and eval/predict/export through the adapter."""
    from safetensors.torch import load_file

    if task == "sft":
        data = write_data(tmp_path / "chat.jsonl", [{"messages": CHAT}, {"prompt": "hello", "response": "fine"}] * 4)
        model, length = tiny_llama_dir, ["task.max_length=256"]
    else:
        data = write_data(tmp_path / "data.jsonl", [{"document": a, "summary": b} for a, b in PAIRS * 3])
        model, length = tiny_t5_dir, []
    run_dir = tmp_path / "run"
    run_cli("train", f"task={task}", "peft=lora", f"task.data.train={data}", f"task.data.validation={data}", *length,
           f"model.name_or_path={model}", "model.name=tiny", "task.generation.max_new_tokens=4",
           "trainer.max_steps=2", "trainer.batch_size=4", "optimizer.lr=1e-2", "logger.console=none",
           "logger.report=false", f"run_dir={run_dir}")  # report.html: tests/report/, and the seq2seq/sft runs above
    results = json.loads((run_dir / "results.json").read_text())
    assert 0 < results["parameters"]["percent"] < 50
    saved = load_file(run_dir / "best" / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)  # the pretrained LM head stays frozen
    run_cli("eval", f"run_dir={run_dir}")
    evaluated = json.loads((run_dir / "eval_validation.json").read_text())
    assert evaluated["loss"] == pytest.approx(results["validation"]["loss"], rel=1e-4)
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("the cat sat\n")
    run_cli("predict", f"run_dir={run_dir}", f"input={source}", f"output={target}")
    assert len(_rows_out(target)) == 1
    run_cli("export", f"run_dir={run_dir}", "merge=true", f"out={tmp_path / 'merged'}")
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_prefix_tuning_on_a_causal_lm_trains_only_the_prefix(tmp_path, tiny_llama_dir):
    """With the locked transformers/peft, prefix tuning drives causal LMs (encoders are refused: tests/peft/test_methods.py)."""
    from safetensors.torch import load_file

    data = write_data(tmp_path / "chat.jsonl", [{"messages": CHAT}, {"prompt": "hello", "response": "fine"}] * 4)
    run_dir = tmp_path / "run"
    run_cli("train", "task=sft", "peft=prefix_tuning", "peft.num_virtual_tokens=4", f"task.data.train={data}",
           "task.max_length=128",
           f"task.data.validation={data}", f"model.name_or_path={tiny_llama_dir}", "model.name=tiny",
           "trainer.max_steps=2", "trainer.batch_size=4", "optimizer.lr=1e-2", "logger.console=none",
           "logger.report=false", f"run_dir={run_dir}")  # report.html: tests/report/, and the seq2seq/sft runs above
    saved = load_file(run_dir / "best" / "adapter_model.safetensors")
    assert list(saved) == ["prompt_embeddings"] and saved["prompt_embeddings"].shape[0] == 4
    run_cli("eval", f"run_dir={run_dir}")
    evaluated = json.loads((run_dir / "eval_validation.json").read_text())
    assert evaluated["loss"] == pytest.approx(json.loads((run_dir / "results.json").read_text())["validation"]["loss"],
                                              rel=1e-4)
