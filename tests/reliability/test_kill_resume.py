"""kill -9 at arbitrary points, including in the middle of a checkpoint save, then `resume=true`: the run
ends with the same metrics and weights as an uninterrupted one.

The killed run is a real subprocess. A small wrapper script patches one function so that the process
SIGKILLs itself at a chosen moment (no test hooks in ftune itself), then runs `ftune.cli.main`.
"""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ftune.commands import train

KILL_AT_STEP = """
import os, signal, sys
import ftune.engine.events as events
original = events.build_subscribers
def build(*args):
    def kill(event):
        if event == {"event": "step", "step": STEP}:
            os.kill(os.getpid(), signal.SIGKILL)
    kill.close = lambda: None
    return [*original(*args), kill]
events.build_subscribers = build
from ftune.cli import main
main(sys.argv[1:])
"""

KILL_DURING_SAVE = """
import os, signal, sys
import ftune.engine.checkpoint as ckpt
original = ckpt._checksums
def checksums(folder):
    if folder.name == ".tmp-step-STEP":  # weights, optimizer, RNG and state written; checksum list not yet
        os.kill(os.getpid(), signal.SIGKILL)
    return original(folder)
ckpt._checksums = checksums
from ftune.cli import main
main(sys.argv[1:])
"""


def _overrides(tiny_model_dir, tiny_ner_data, run_dir):
    return [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
            f"task.data.validation={tiny_ner_data['validation']}", "trainer.epochs=2", "trainer.batch_size=16",
            "optimizer.lr=1e-3", "trainer.save_every=1", "trainer.eval_every=4", "trainer.keep_last=3",
            "logger.console=none", f"run_dir={run_dir}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir, tiny_ner_data, compose_config):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    return run_dir, train.run(compose_config("train", _overrides(tiny_model_dir, tiny_ner_data, run_dir)))


def _kill_then_resume(script, step, tmp_path, tiny_model_dir, tiny_ner_data, compose_config):
    run_dir = tmp_path / "run"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(script.replace("STEP", str(step)))
    killed = subprocess.run([sys.executable, str(wrapper), "train", *_overrides(tiny_model_dir, tiny_ner_data, run_dir)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_dir / "results.json").exists()
    resumed = train.run(compose_config("train", [*_overrides(tiny_model_dir, tiny_ner_data, run_dir), "resume=true"]))
    return run_dir, resumed


def _assert_same(full, resumed, run_dir):
    full_dir, full_results = full
    assert resumed["steps"] == full_results["steps"] and resumed["best_step"] == full_results["best_step"]
    assert resumed["validation"] == full_results["validation"]
    a, b = load_file(full_dir / "best" / "model.safetensors"), load_file(run_dir / "best" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("step", sorted(random.Random(7).sample(range(2, 12), 2)))
def test_kill_9_at_a_step_then_resume_matches(step, uninterrupted, tmp_path, tiny_model_dir, tiny_ner_data,
                                              compose_config):
    run_dir, resumed = _kill_then_resume(KILL_AT_STEP, step, tmp_path, tiny_model_dir, tiny_ner_data, compose_config)
    _assert_same(uninterrupted, resumed, run_dir)


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_save_resumes_from_the_previous_one(uninterrupted, tmp_path, tiny_model_dir,
                                                                      tiny_ner_data, compose_config, caplog):
    run_dir, resumed = _kill_then_resume(KILL_DURING_SAVE, 5, tmp_path, tiny_model_dir, tiny_ner_data, compose_config)
    _assert_same(uninterrupted, resumed, run_dir)


def test_a_damaged_checkpoint_is_skipped_with_a_warning(uninterrupted, tmp_path, caplog):
    import shutil

    from ftune.engine import checkpoint as ckpt

    full_dir, results = uninterrupted
    run_dir = tmp_path / "copy"
    shutil.copytree(full_dir, run_dir)
    newest = run_dir / "checkpoints" / f"step-{results['steps']}"
    with open(newest / "optimizer.pt", "r+b") as handle:  # flip a byte: the checksum no longer matches
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    chosen = ckpt.find(run_dir, True)
    assert chosen == run_dir / "checkpoints" / f"step-{results['steps'] - 1}"
    assert "optimizer.pt is missing or does not match its checksum" in caplog.text
    assert json.loads((chosen / "trainer_state.json").read_text())["step"] == results["steps"] - 1
