"""predict on hostile input: arbitrary bytes, empty lines, very long lines, and a reader that goes away."""

import json
import os
import subprocess
import sys

import pytest

from ftune.commands import train

pytestmark = pytest.mark.slow  # ftune predict runs as a subprocess behind a shell pipe


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir, tiny_ner_data, compose_config):
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    train.run(compose_config("train", [
        f"model.name_or_path={tiny_model_dir}", f"task.data.train={tiny_ner_data['train']}",
        f"task.data.validation={tiny_ner_data['validation']}", "trainer.max_steps=2", "task.max_length=32",
        "logger.console=none", f"run_dir={run_dir}"]))
    return run_dir


def _predict(run_dir, data: bytes, pipe_to: str = "") -> subprocess.CompletedProcess:
    command = f"{sys.executable} -m ftune predict run_dir={run_dir} input=- output=-{pipe_to}"
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], input=data, capture_output=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_bytes_empty_and_very_long_lines_give_one_output_per_line(tiny_run):
    long_line = " ".join(["Paris"] * 2000)  # far over task.max_length: windows, not truncation
    data = b"\xff\xfe\x00garbage \xc3\x28 bytes\n\n" + long_line.encode() + b"\n" + b'{"tokens": []}\n'
    result = _predict(tiny_run, data)
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(rows) == 4 and rows[1] == {"text": "", "entities": []}
    assert "\ufffd" in rows[0]["text"]  # undecodable bytes are replaced, never a crash
    assert len(rows[2]["text"]) == len(long_line)
    assert all(0 <= e["start"] < e["end"] <= len(long_line) for e in rows[2]["entities"])
    assert b"Traceback" not in result.stderr


def test_a_closed_stdout_stops_quietly(tiny_run):
    data = ("Angela Merkel visited Paris .\n" * 3000).encode()
    result = _predict(tiny_run, data, " | head -n 1")
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 1
    assert b"Traceback" not in result.stderr and b"BrokenPipeError" not in result.stderr
