"""Continual learning through the CLI with the tiny model (slow tier): the forgetting table against separate
evaluations of the same checkpoints, and one adapter per stage leaving the earlier adapter's outputs bit-identical."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import cli_exit_code, run_cli

pytestmark = pytest.mark.slow


def _stage(overrides: list[str], run_dir, train, validation, *extra: str) -> list[str]:
    return [*[o for o in overrides if not o.startswith(("run_dir=", "task.data."))], f"run_dir={run_dir}",
            f"task.data.train={train}", f"task.data.validation={validation}", "task.data.test=null",
            "trainer.epochs=1", "trainer.batch_size=32", "logger.report=false", *extra]


def _eval_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    run_cli("eval", *args, "output_format=json")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_forgetting_table_equals_separate_evaluations(tiny_train_overrides, tiny_ner_data, tmp_path, capsys):
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    run_cli("train", *_stage(tiny_train_overrides, first, tiny_ner_data["train"], tiny_ner_data["validation"]))
    run_cli("train", *[o for o in _stage(tiny_train_overrides, second, tiny_ner_data["test"], tiny_ner_data["test"],
                                         f"continual.previous=[{first}]", "logger.report=true",
                                         "continual.every_eval=true") if o != "trainer.epochs=1"], "trainer.epochs=2")
    results = json.loads((second / "results.json").read_text())
    [row] = results["forgetting"]
    assert row["run"] == str(first) and row["metric"] == "f1"
    then = _eval_json(capsys, f"run_dir={first}")  # stage 1's best/ on its validation split
    now = _eval_json(capsys, f"run_dir={second}", f"file={tiny_ner_data['validation']}")
    assert row["when_trained"] == then["f1"] and row["now"] == now["f1"]
    assert row["difference"] == now["f1"] - then["f1"]
    # continual.every_eval: the earlier split at each evaluation; at the best step it is the table's "now"
    evals = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    evals = {e["step"]: e for e in evals if e.get("event") == "eval"}
    assert len(evals) == 2 and all("previous0/f1" in e for e in evals.values())
    assert evals[results["best_step"]]["previous0/f1"] == row["now"]
    card = (second / "best" / "README.md").read_text()
    assert "forgetting" in card and str(first) in card
    assert "Forgetting" in (second / "report.html").read_text()


def _logits(run_dir, adapter: str | None, examples: list[dict]) -> torch.Tensor:
    from ftune.inference import Inference

    loaded = Inference.load(OmegaConf.create({"run_dir": str(run_dir), "adapter": adapter, "device": "cpu"}))
    batch = loaded.task.collate(loaded.task.featurize(examples, loaded.tokenizer))
    loaded.model.eval()
    with torch.no_grad():
        return loaded.model(**batch["inputs"]).logits


def test_one_adapter_per_stage_keeps_the_earlier_adapter_bit_identical(tiny_train_overrides, tiny_ner_data,
                                                                         tmp_path, capsys):
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    lora = ["peft=lora", "optimizer.lr=1e-2"]
    run_cli("train", *_stage(tiny_train_overrides, first, tiny_ner_data["train"], tiny_ner_data["validation"],
                             *lora, "continual.adapter=s1"))
    examples = [{"tokens": "the European Commission said on Thursday".split()}, {"tokens": ["Germany", "won"]}]
    before = _logits(first, None, examples)
    assert torch.equal(before, _logits(first, "s1", examples))  # adapters/s1 is the run's best/
    run_cli("train", *_stage(tiny_train_overrides, second, tiny_ner_data["test"], tiny_ner_data["test"], *lora,
                             "continual.adapter=s2", f"continual.previous=[{first}]"))
    assert sorted(p.name for p in (second / "adapters").iterdir()) == ["s1", "s2"]
    assert torch.equal(_logits(second, "s1", examples), before)  # stage 2 did not change stage 1's adapter
    assert not torch.equal(_logits(second, "s2", examples)[..., :2], before[..., :2])
    [row] = json.loads((second / "results.json").read_text())["forgetting"]
    assert row["adapter"] == "s1" and row["difference"] == 0.0  # measured: the earlier adapter evaluated again
    capsys.readouterr()
    assert cli_exit_code("eval", f"run_dir={second}", "adapter=s3") == 2
    assert "choose from: s1, s2" in capsys.readouterr().err


def test_pseudo_labels_are_the_earlier_models_entities_on_untagged_words(tiny_train_overrides, tiny_ner_data,
                                                                         tmp_path):
    """Stage 2's data tags only ORG/MISC (PER and LOC set to O): with continual.pseudo_label the earlier model's
    entities on O words go into its training tags; counted here from `ftune predict` of the earlier run."""
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    stage1 = _stage(tiny_train_overrides, first, tiny_ner_data["train"], tiny_ner_data["validation"])
    run_cli("train", *[o for o in stage1 if not o.startswith(("trainer.epochs=", "optimizer.lr="))],
            "trainer.epochs=12", "optimizer.lr=1e-2")  # long enough to find entities
    sentences = [[line.split() for line in block.splitlines()]
                 for block in tiny_ner_data["test"].read_text().strip().split("\n\n")]
    new = [[(row[0], row[-1] if row[-1][2:] in ("ORG", "MISC") else "O") for row in s] for s in sentences]
    data = tmp_path / "stage2.conll"
    data.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in new) + "\n")
    inputs = tmp_path / "tokens.jsonl"
    inputs.write_text("".join(json.dumps({"tokens": [w for w, _ in s]}) + "\n" for s in new))
    run_cli("predict", f"run_dir={first}", f"input={inputs}", f"output={tmp_path / 'predicted.jsonl'}")
    predicted = [json.loads(line) for line in (tmp_path / "predicted.jsonl").read_text().splitlines()]
    expected = sum(all(t == "O" for _, t in s[e["start_token"]:e["end_token"]]) and
                   (e["end_token"] == len(s) or s[e["end_token"]][1] != f"I-{e['type']}")
                   for s, row in zip(new, predicted, strict=True) for e in row["entities"])
    assert expected > 0  # the earlier model finds entities where stage 2's data has none
    run_cli("train", *_stage(tiny_train_overrides, second, data, data, f"init_from={first}",
                             "continual.pseudo_label=true"))
    found = json.loads((second / "results.json").read_text())["pseudo_labels"]
    assert found["added"] == expected and 0 < found["examples"] <= found["of"] == len(new)
