"""task=reward: the Bradley–Terry loss and accuracy against hand-computed values, data forms, train → eval →
predict on a tiny encoder and a tiny decoder."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from ftune.registry import defaults
from ftune.tasks.preference_losses import bradley_terry
from ftune.tasks.reward import RewardTask
from tests.conftest import run_cli, write_data

PAIRS = [
    {"prompt": "what colour is the sky ?", "chosen": "the sky is blue", "rejected": "the cat sat on the mat"},
    {"messages": [{"role": "user", "content": "hello , how are you ?"}],
     "chosen": [{"role": "assistant", "content": "i am fine , thank you"}], "rejected": "das ist ein kleines haus",
     "margin": 1.0},
    {"instruction": "summarize the long story", "input": "a dog ran in the park", "chosen": "a dog ran",
     "rejected": "Paris is the capital of France ."},
]


def reward_task(**settings) -> RewardTask:
    return RewardTask(OmegaConf.merge(defaults("task", "reward"), settings))


def test_bradley_terry_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.5, -1.0])
    expected = [-math.log(1 / (1 + math.exp(-d))) for d in (1.0, -1.0, 0.0)]
    assert bradley_terry(chosen, rejected).tolist() == pytest.approx(expected, abs=1e-6)
    with_margin = [-math.log(1 / (1 + math.exp(-(d - 0.5)))) for d in (1.0, -1.0, 0.0)]
    assert bradley_terry(chosen, rejected, 0.5).tolist() == pytest.approx(with_margin, abs=1e-6)
    task = reward_task()
    state = task.metric_state()
    task.update_metrics(state, [(0.0, 2.0, 1.0), (0.0, 0.5, 1.5), (0.0, -1.0, -1.0)], None, None)
    metrics = task.final_metrics(state)
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["margin"] == pytest.approx(0.0)  # a tie is no win


def test_forward_equals_the_loss_of_separate_scores(tiny_model_dir, tokenizer):
    task = reward_task(max_length=64)
    task.bind_tokenizer(tokenizer)
    model = task.build_model(str(tiny_model_dir)).eval()
    examples = list(task._iter_examples(iter(PAIRS), "x"))
    assert examples[1]["margin"] == 1.0 and examples[0]["margin"] == 0.0
    batch = task.collate(task.featurize(examples, tokenizer))
    with torch.no_grad():
        _, loss_sum, n = task.forward(model, batch)
        expected = 0.0
        for ex in examples:  # each reply alone, unpadded
            c, r = (model(input_ids=torch.tensor([task_ids])).logits[0, 0].item() for task_ids in
                    (tokenizer("\n".join(m["content"] for m in ex["messages"]), ex[s])["input_ids"] for s in ("chosen", "rejected")))
            expected += -math.log(1 / (1 + math.exp(-(c - r - ex["margin"]))))
    assert int(n) == 3 and loss_sum.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["decoder"])
def test_train_eval_predict(family, tiny_model_dir, tiny_llama_dir, tmp_path):
    folder = tiny_model_dir if family == "encoder" else tiny_llama_dir
    train, dev = write_data(tmp_path / "pairs.jsonl", PAIRS * 4), write_data(tmp_path / "dev.jsonl", PAIRS)
    run_dir = tmp_path / "run"
    run_cli("train", "task=reward", f"model.name_or_path={folder}", "model.name=tiny", f"task.data.train={train}",
            f"task.data.validation={dev}", "trainer.max_steps=6", "trainer.batch_size=4", "optimizer.lr=5e-3",
            "logger.console=none", "task.max_length=64", f"run_dir={run_dir}", "overwrite=true")
    val = json.loads((run_dir / "results.json").read_text())["validation"]
    assert val["pairs"] == 3 and val["accuracy"] == 1.0 and val["margin"] > 0  # the repeated pairs are learnt
    inputs = write_data(tmp_path / "in.jsonl", [{"prompt": "what colour is the sky ?", "response": "the sky is blue"},
                                                PAIRS[0]])
    out = tmp_path / "out.jsonl"
    run_cli("predict", f"run_dir={run_dir}", f"input={inputs}", f"output={out}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert isinstance(rows[0]["score"], float) and rows[1]["prefers"] == "chosen"
    assert rows[0]["score"] == pytest.approx(rows[1]["chosen_score"], abs=1e-4)
