"""CI scripting: scripts/ci_example.sh end to end on the tiny model, the gate's both outcomes, JSON output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ci_example_script_and_the_gate(tmp_path, tiny_model_dir, tiny_ner_data, capsys):
    from tests.conftest import cli_exit_code

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTUNE": f"{sys.executable} -m ftune", "OUT": str(tmp_path / "ci"),
           "GATE": "f1>=0.0,loss<=100"}
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
                 f"task.data.validation={tiny_ner_data['validation']}", "trainer.epochs=1", "optimizer.lr=1e-3",
                 "logger.console=auto"]
    done = subprocess.run(["bash", str(REPO / "scripts" / "ci_example.sh"), *overrides], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "ci"
    trained = json.loads((out / "train.json").read_text())  # stdout held exactly one JSON document
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["f1"] == trained["validation"]["f1"] and all(c["passed"] for c in evaluated["checks"])
    assert json.loads((out / "predictions.jsonl").read_text().splitlines()[0])["text"].startswith("Angela")
    assert "\x1b[" not in done.stderr  # NO_COLOR: no ANSI codes, no bar redraws

    # a missed gate, in this process (the script's own run above is the subprocess path)
    capsys.readouterr()
    assert cli_exit_code("eval", f"run_dir={out / 'run'}", "check=f1>=0.99", "output_format=json") == 1
    missed = capsys.readouterr()
    assert json.loads(missed.out)["checks"][0]["passed"] is False  # still one JSON document on stdout
    last = missed.err.strip().splitlines()[-1]
    assert last == f"ftune: check failed: f1 = {trained['validation']['f1']:.4f}, required f1>=0.99"
    assert "Traceback" not in missed.err and "┏" in missed.err  # the table moved to stderr


def test_check_parsing_nested_metrics_and_errors():
    import pytest

    from ftune import checks
    from ftune.errors import FtuneError

    metrics = {"f1": 0.9, "loss": 0.3, "per_type": {"LOC": {"f1": 0.5}}}
    results = checks.evaluate(metrics, checks.parse("f1>=0.85, per_type.LOC.f1>0.6,val/loss<=0.5"))
    assert [r["passed"] for r in results] == [True, False, True]
    assert checks.failure_line(results) == "check failed: per_type.LOC.f1 = 0.5000, required per_type.LOC.f1>0.6"
    assert checks.parse(["f1>=0.8", "loss<1"]) == [("f1", ">=", 0.8), ("loss", "<", 1.0)]
    with pytest.raises(FtuneError, match="cannot read the check `f1=>0.8`"):
        checks.parse("f1=>0.8")
    with pytest.raises(FtuneError, match="no metric `f2` to check .*choose from: f1, loss"):
        checks.evaluate(metrics, checks.parse("f2>=0.8"))


def test_no_color_or_dumb_terminal_gets_plain_lines(monkeypatch):
    from omegaconf import OmegaConf

    from ftune.engine import events

    logger = OmegaConf.create({"console": "auto", "jsonl": False, "tensorboard": False})
    monkeypatch.setattr(events.sys.stderr, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert type(events.build_subscribers(logger, None)[0]) is events.RichConsole  # a terminal: the bar
    monkeypatch.setenv("NO_COLOR", "1")
    assert type(events.build_subscribers(logger, None)[0]) is events.PlainConsole
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert type(events.build_subscribers(logger, None)[0]) is events.PlainConsole
