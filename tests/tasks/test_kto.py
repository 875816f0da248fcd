"""task=kto: the loss against its direct formula on a tiny model (KL estimate from mismatched pairs), the data
forms, rows without a label, and a LoRA run end to end (reference = adapter disabled)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks.kto import KtoTask
from tests.conftest import cli_exit_code, run_cli, write_data

ROWS = [
    {"prompt": "what colour is the sky ?", "completion": "the sky is blue", "label": True},
    {"prompt": "what colour is the sky ?", "completion": "the cat sat on the mat", "label": False},
    {"messages": [{"role": "user", "content": "hello , how are you ?"},
                  {"role": "assistant", "content": "i am fine , thank you"}], "label": True},
    {"instruction": "summarize the long story", "input": "a dog ran", "completion": "das ist ein haus", "label": False},
]


def kto_task(**settings) -> KtoTask:
    return KtoTask(OmegaConf.merge(defaults("task", "kto"), settings))


def by_hand(model, ids: list[int], labels: list[int]) -> float:
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != -100)


def test_loss_equals_the_direct_formula(chat_tokenizer, tiny_llama_dir):
    task = kto_task(desirable_weight=1.0, undesirable_weight=1.5, beta=0.5)
    model = task.build_model(str(tiny_llama_dir)).eval()
    examples = list(task._iter_examples(iter(ROWS), "x", True))
    assert [e["desirable"] for e in examples] == [True, False, True, False]
    assert examples[2]["completion"] == "i am fine , thank you" and len(examples[2]["messages"]) == 1
    features = task.featurize(examples, chat_tokenizer)
    # the mismatched row of example i is its prompt with example i+1's completion
    assert chat_tokenizer.decode([t for t in features[0]["rejected_labels"] if t != -100]).startswith("the cat sat")
    reference = {f["key"]: (-20.0 - i, -25.0 + i) for i, f in enumerate(features)}  # made-up reference sums
    task.reference.update(reference)
    _, loss_sum, n = task.forward(model, task.collate(features))
    policy = [(by_hand(model, f["chosen_ids"], f["chosen_labels"]), by_hand(model, f["rejected_ids"], f["rejected_labels"]))
              for f in features]
    z = max(0.0, sum(k - reference[f["key"]][1] for f, (_, k) in zip(features, policy, strict=True)) / len(features))
    expected = 0.0
    for f, (p, _) in zip(features, policy, strict=True):
        r = p - reference[f["key"]][0]
        expected += 1.0 * (1 - 1 / (1 + math.exp(-0.5 * (r - z)))) if f["desirable"] else \
            1.5 * (1 - 1 / (1 + math.exp(-0.5 * (z - r))))
    assert int(n) == 4 and loss_sum.item() == pytest.approx(expected, rel=1e-4)


def test_rows_without_a_label_are_refused(tmp_path):
    bad = write_data(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "q", "completion": "a"}, {**ROWS[1], "label": "yes"}])
    with pytest.raises(FtuneError, match=r"2 problem\(s\).*bad.jsonl:2: `label` must be true.*bad.jsonl:3"):
        kto_task(data={"train": str(bad)}).load_split("train")


@pytest.mark.slow
def test_cli_refuses_rows_without_a_label(tmp_path, capsys, tiny_llama_dir):
    bad = write_data(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "q", "completion": "a"}])
    assert cli_exit_code("train", "task=kto", f"task.data.train={bad}", "model.name=tiny",
                          f"model.name_or_path={tiny_llama_dir}", "task.max_length=128", f"run_dir={tmp_path / 'run'}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "label" in line]) == 1


@pytest.mark.slow
def test_train_kto_with_lora(tiny_llama_dir, tmp_path):
    train, dev = write_data(tmp_path / "t.jsonl", ROWS * 3), write_data(tmp_path / "d.jsonl", ROWS)
    run_dir = tmp_path / "run"
    run_cli("train", "task=kto", f"model.name_or_path={tiny_llama_dir}", "model.name=tiny", "peft=lora",
            f"task.data.train={train}", f"task.data.validation={dev}", "trainer.max_steps=3", "trainer.batch_size=4",
            "optimizer.lr=1e-2", "logger.console=none", "task.max_length=128", f"run_dir={run_dir}", "overwrite=true")
    val = json.loads((run_dir / "results.json").read_text())["validation"]
    assert val["desirable"] == 2 and val["undesirable"] == 2 and val["reward_margin"] > 0
    assert (run_dir / "best" / "adapter_config.json").is_file()
