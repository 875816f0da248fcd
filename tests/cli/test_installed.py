"""The installed command as a user runs it: a bad key and a sweep as subprocesses (each pays ~5 s of imports);
help, an unknown command, missing data and train/eval/predict in-process (the README's and the CI script's tests
cover the subprocess path of those)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocesses and whole train/eval/predict runs: make test, not make test-unit

FTUNE = [sys.executable, "-m", "ftune"]


def ftune(*args, cwd=None, stdin=None, env=None, check=True):
    result = subprocess.run([*FTUNE, *map(str, args)], cwd=cwd, input=stdin, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_help_lists_subcommands_and_config_groups(capsys):
    from tests.conftest import cli_exit_code

    assert cli_exit_code("--help") == 0  # in-process: the subprocess path is the next tests' and the README's
    top = capsys.readouterr().out
    assert all(word in top for word in ("train", "eval", "predict", "exit codes"))
    assert cli_exit_code("train", "--help") == 0
    train_help = capsys.readouterr().out
    assert "Configuration groups" in train_help and "model: " in train_help and "minilm" in train_help


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    result = ftune("train", "trainer.epochz=3", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "did you mean `trainer.epochs`" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_command_and_missing_data_are_one_line_and_exit_2(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """In-process (the previous test runs the installed command for the same kind of error)."""
    from tests.conftest import cli_exit_code

    assert cli_exit_code("trian") == 2 and "did you mean `train`" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    code = cli_exit_code("train", f"model.name_or_path={tiny_model_dir}", "task.data.train=missing.conll",
                         f"run_dir={tmp_path / 'run'}")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "ftune: error: task.data.train: file not found: missing.conll" in err


def test_train_eval_predict_end_to_end(tmp_path, tiny_model_dir, tiny_ner_data, capsys):
    """train, eval, predict in this process (the README's test and the CI script's run them as subprocesses)."""
    from tests.conftest import run_cli

    run_dir = tmp_path / "run"
    run_cli("train", f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
            f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}",
            f"task.data.test={tiny_ner_data['test']}", "trainer.epochs=1", "optimizer.lr=1e-3", f"run_dir={run_dir}")
    assert "micro avg" in capsys.readouterr().out  # the F1 table
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "train.log").stat().st_size > 0
    results = json.loads((run_dir / "results.json").read_text())

    run_cli("eval", f"run_dir={run_dir}", "split=test")
    assert "micro avg" in capsys.readouterr().out
    saved = json.loads((run_dir / "eval_test.json").read_text())
    assert saved["f1"] == pytest.approx(results["test"]["f1"])

    text = "Angela Merkel met Emmanuel Macron in Paris .\n\n" + json.dumps({"tokens": ["Rome", "is", "big"]}) + "\n"
    (tmp_path / "in.txt").write_text(text)
    run_cli("predict", f"run_dir={run_dir}", f"input={tmp_path / 'in.txt'}", f"output={tmp_path / 'out.jsonl'}")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["text"].startswith("Angela") and rows[1] == {"text": "", "entities": []}
    assert rows[2]["tokens"] == ["Rome", "is", "big"] and len(rows[2]["tags"]) == 3
    for entity in rows[0]["entities"]:
        assert rows[0]["text"][entity["start"]:entity["end"]] == entity["text"] and 0 <= entity["score"] <= 1

def test_multirun_2x2_summary_with_failed_jobs(tmp_path, tiny_model_dir, tiny_ner_data):
    """Every job in its own folder; a failing job is in the table and does not stop the others."""
    sweep = tmp_path / "sweep"
    result = ftune("train", "-m", "optimizer.lr=1e-3,5e-3", f"task.data.train={tiny_ner_data['train']},missing.conll",
                   f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
                   f"task.data.validation={tiny_ner_data['validation']}", "trainer.max_steps=2",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "2 job(s) failed: #1, #3" in result.stderr
    assert "[HYDRA]" not in result.stdout  # Hydra's own messages go to stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1", "2", "3"]
    assert "lr: 0.001" in (sweep / "0" / "config.yaml").read_text()
    assert "lr: 0.005" in (sweep / "2" / "config.yaml").read_text()
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["metric"] == "f1" and summary["failed"] == 2
    assert summary["swept"] == ["optimizer.lr", "task.data.train"]
    rows = {row["job"]: row for row in summary["jobs"]}
    assert [rows[n]["status"] for n in range(4)] == ["ok", "failed", "ok", "failed"]
    assert "file not found: missing.conll" in rows[1]["error"]
    values = {n: json.loads((sweep / str(n) / "results.json").read_text())["validation"]["f1"] for n in (0, 2)}
    assert rows[0]["value"] == pytest.approx(values[0]) and rows[2]["value"] == pytest.approx(values[2])
    best = max((0, 2), key=lambda n: (values[n], -n))
    assert summary["best_job"] == best and rows[best]["best"] and sum(r["best"] for r in rows.values()) == 1
    csv_rows = (sweep / "summary.csv").read_text().splitlines()
    assert csv_rows[0].startswith("job,optimizer.lr,task.data.train,f1,status,best") and len(csv_rows) == 5
    assert "failed: task.data.train: file not found" in result.stdout  # the table
