"""`ftune explain` and `ftune stress` through the CLI on a tiny NER run: JSON lines, the HTML page,
faithfulness, the stress table and JSON (the split's files unchanged), the card's Robustness section, /explain,
and bad input as one line with exit 2 (issue 31)."""

import hashlib
import json

import pytest

from tests.conftest import cli_exit_code, run_cli


def test_an_unknown_method_is_one_line_with_did_you_mean(capsys):
    assert cli_exit_code("explain", "run_dir=nowhere", "explain.method=integrated_gradient") == 2
    err = capsys.readouterr().err.strip()
    assert "explain.method: unknown value `integrated_gradient`" in err and "did you mean `integrated_gradients`" in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_explain_and_stress_a_tiny_ner_run(tiny_train_overrides, tiny_ner_data, tmp_path, capsys, monkeypatch):
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_ner_data.values()}
    run_cli("train", *tiny_train_overrides)
    run = tmp_path / "run"
    inputs = tmp_path / "in.txt"
    inputs.write_text("Peter Blackburn visited Paris .\nThe European Commission said on Thursday .\n")
    page, out = tmp_path / "page.html", tmp_path / "out.jsonl"
    run_cli("explain", f"run_dir={run}", f"input={inputs}", f"output={out}", f"explain.html={page}",
            "explain.method=gradient_x_input")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all("explanations" in r for r in rows)
    assert page.read_text().startswith("<!doctype html>")
    run_cli("explain", f"run_dir={run}", "explain.faithfulness=true", "explain.max_examples=4",
            "explain.method=attention")
    result = json.loads((run / "faithfulness_validation_attention.json").read_text())
    assert set(result["method"]["comprehensiveness"]) == {"10%", "20%", "50%", "aopc"}
    capsys.readouterr()
    run_cli("stress", f"run_dir={run}", "stress.seeds=[1]", "stress.max_examples=8",
            "stress.perturbations=[typos,lowercase,entity_swap]", "stress.typo_rates=[0.2]")
    table = capsys.readouterr().out
    assert "typos 20%" in table and "entity_swap" in table
    stress = json.loads((run / "stress_validation.json").read_text())
    assert [r["perturbation"] for r in stress["perturbations"]] == ["typos 20%", "lowercase", "entity_swap"]
    assert digest == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_ner_data.values()}
    from ftune.card import build_card

    assert "## Robustness" in str(build_card(run / "best", run))
    assert cli_exit_code("explain", f"run_dir={run}", f"input={inputs}", "explain.target=PERS") == 2
    assert "target `PERS` is not an entity type" in capsys.readouterr().err
    fastapi = pytest.importorskip("fastapi.testclient")
    from ftune.inference import Inference
    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    monkeypatch.chdir(tmp_path)
    from omegaconf import OmegaConf

    inference = Inference.load(OmegaConf.create({"run_dir": str(run), "checkpoint": "best", "device": "cpu"}))
    with fastapi.TestClient(create_app(inference, ServeSettings(max_inputs=2))) as client:
        answer = client.post("/explain", json={"input": "Peter visited Paris .", "method": "attention"})
        assert answer.status_code == 200 and "explanations" in answer.json()["explanation"]
        assert client.post("/explain", json={"inputs": ["a", "b", "c"]}).status_code == 413
        assert client.post("/explain", json={"input": "a", "method": "nope"}).status_code == 422
