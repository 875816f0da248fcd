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
    assert cli_exit_code("stress", f"run_dir={run}", "stress.attack=input_reduction") == 2  # tagging: refused
    assert "cannot be attacked by input_reduction" in capsys.readouterr().err
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


@pytest.mark.slow
def test_input_reduction_and_the_report_of_a_classification_run(classification_run, capsys):
    """stress.attack=input_reduction: per item tokens kept, in the table and stress_validation.json;
    `ftune report explain=3`: explained validation examples, the most confident errors first."""
    run = classification_run
    run_cli("stress", f"run_dir={run}", "stress.perturbations=[lowercase]", "stress.max_examples=6",
            "stress.attack=input_reduction")
    assert "input_reduction (gradient_x_input): 6 examples" in capsys.readouterr().out
    attack = json.loads((run / "stress_validation.json").read_text())["attack"]
    assert [i["example"] for i in attack["items"]] == list(range(6))
    assert all(1 <= i["kept"] <= i["tokens"] for i in attack["items"])
    run_cli("report", f"run_dir={run}", "explain=3", "explain_method=gradient_x_input", "device=cpu")
    report = (run / "report.html").read_text()
    assert "Explained validation examples (gradient_x_input)" in report and report.count("gold: ") == 3
    assert "input_reduction (gradient_x_input)" in report  # the attack's line under Robustness
    from ftune.card import build_card

    assert "input_reduction (gradient_x_input): 6 examples" in str(build_card(run / "best", run))
    assert cli_exit_code("report", f"run_dir={run}", "explain_method=integrated_gradient") == 2


@pytest.mark.slow
def test_explain_a_qa_run_and_an_sft_run(qa_run, sft_run, tmp_path, capsys):
    question = tmp_path / "q.jsonl"
    question.write_text(json.dumps({"question": "Who won?", "context": "The Denver Broncos defeated the Carolina "
                                    "Panthers to win Super Bowl 50 ."}) + "\n")
    out, page = tmp_path / "qa.jsonl", tmp_path / "qa.html"
    run_cli("explain", f"run_dir={qa_run}", f"input={question}", f"output={out}", f"explain.html={page}",
            "explain.steps=8")
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    (item,) = row["explanations"]
    assert item["label"] == "answer" and item["span"] in row["context"] and "delta" in item
    assert "“" in page.read_text()  # the span is shown on the page
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("what colour is the sky ?\n")
    out = tmp_path / "sft.jsonl"
    run_cli("explain", f"run_dir={sft_run}", f"input={prompt}", f"output={out}", "explain.method=gradient_x_input")
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "generated" in row["prediction"] and all("log_probability" in e for e in row["explanations"])
    capsys.readouterr()
    assert cli_exit_code("explain", f"run_dir={sft_run}", "explain.faithfulness=true") == 2
    err = capsys.readouterr().err.strip()
    assert "faithfulness is not measured for generated text" in err and len(err.splitlines()) == 1
