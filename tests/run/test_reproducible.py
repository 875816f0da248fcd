"""A run is exactly what its config says: resume refuses silent changes and honours accepted ones; the versions
a run was made with are on record."""

import json

import pytest

from ftune import provenance
from tests.conftest import cli_exit_code as _exit_code
from tests.conftest import run_cli


@pytest.fixture
def ten_step_run(tiny_model_dir, tiny_ner_data, tmp_path):
    common = [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "task=ner",
              f"task.data.train={tiny_ner_data['train']}", "trainer.batch_size=16", "optimizer.lr=1e-3",
              "scheduler.warmup_ratio=0.1",  # the schedule arithmetic below has one warm-up step
              "trainer.log_every=1", "logger.console=none", f"run_dir={tmp_path / 'run'}"]
    run_cli("train", *common, "trainer.max_steps=4")
    return tmp_path / "run", common


def _lrs(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["lr"] for row in rows if row["event"] == "train"}


def test_resume_with_a_changed_lr_is_refused_and_leaves_the_run_as_it_was(ten_step_run, capsys):
    run_dir, common = ten_step_run
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "train.log"}
    assert _exit_code("train", *common, "trainer.max_steps=8", "optimizer.lr=0.5", "resume=true") == 2
    err = capsys.readouterr().err
    assert ("resume would change 2 setting(s) of the run: optimizer.lr: 0.001 → 0.5; trainer.max_steps: 4 → 8 "
            "(resume with the saved values, accept with resume_allow=[optimizer.lr,trainer.max_steps]") in err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "train.log"}
    assert after == before  # same checkpoints, same config.yaml, same metrics


def test_an_accepted_lr_change_takes_effect_and_is_recorded(ten_step_run):
    run_dir, common = ten_step_run
    old = _lrs(run_dir)
    run_cli("train", *common, "trainer.max_steps=8", "optimizer.lr=0.5", "resume=true",
            "resume_allow=[optimizer.lr,trainer.max_steps]")
    lrs = _lrs(run_dir)
    assert old[4] == pytest.approx(0.0)  # the 4-step schedule had ended
    # the 8-step linear schedule (1 warm-up step: 10 %) continues at step 5 from the new base rate: 0.5 · 3 / 7
    assert lrs[5] == pytest.approx(0.5 * 3 / 7) and lrs[8] == pytest.approx(0.0)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resume"]
    assert resumed and resumed[0]["step"] == 4
    assert {c["key"]: (c["old"], c["new"]) for c in resumed[0]["changed"]} == {
        "optimizer.lr": (0.001, 0.5), "trainer.max_steps": (4, 8)}
    saved = (run_dir / "config.yaml").read_text()
    assert "lr: 0.5" in saved and "max_steps: 8" in saved


def test_settings_without_effect_may_change_and_unknown_allowances_are_refused(ten_step_run, capsys):
    run_dir, common = ten_step_run
    run_cli("train", *common, "trainer.max_steps=4", "resume=true", "trainer.keep_last=3", "logger.jsonl=true")
    assert _exit_code("train", *common, "trainer.max_steps=4", "resume=true", "resume_allow=[trainer.seed]") == 2
    assert "resume_allow: `trainer.seed` cannot change on resume" in capsys.readouterr().err


def test_results_and_eval_record_the_versions(ten_step_run):
    run_dir, _ = ten_step_run
    versions = json.loads((run_dir / "results.json").read_text())["versions"]
    assert versions["ftune"] and versions["python"]
    assert set(versions["packages"]) == set(provenance.PACKAGES) and versions["packages"]["torch"].startswith("2.")
    run_cli("eval", f"run_dir={run_dir}", "split=train")
    assert json.loads((run_dir / "eval_train.json").read_text())["versions"] == provenance.versions()


def test_eval_warns_when_the_run_was_trained_under_other_versions(ten_step_run, capsys):
    run_dir, _ = ten_step_run
    results = json.loads((run_dir / "results.json").read_text())
    results["versions"]["packages"]["transformers"] = "5.0.0"
    (run_dir / "results.json").write_text(json.dumps(results))
    run_cli("eval", f"run_dir={run_dir}", "split=train")
    lines = [line for line in capsys.readouterr().err.splitlines() if "other versions" in line]
    assert len(lines) == 1 and "transformers 5.0.0 → " in lines[0]
