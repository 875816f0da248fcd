"""task=grpo: advantages, the clipped objective, the k3 KL and the loss normalisations against hand-computed
values; the reward plug-ins on known strings; bad inputs; a tiny seeded run raises a trivially learnable reward."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks import rewards as R
from ftune.tasks.grpo import GrpoTask
from ftune.tasks.preference_losses import group_advantages, grpo_reduce, grpo_token_loss
from tests.conftest import cli_exit_code, run_cli, write_data


def settings(**over):
    return OmegaConf.merge(defaults("task", "grpo").reward_settings, over)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])  # two groups of 4; the second all equal
    advantages, flat = group_advantages(rewards, 4)
    std = math.sqrt(sum((r - 0.5) ** 2 for r in (1, 0, 0, 1)) / 3)  # unbiased, as torch.std and TRL
    assert advantages[:4].tolist() == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 1 + [-0.5 / (std + 1e-4), 0.5 / (std + 1e-4)])
    assert advantages[4:].tolist() == [0.0] * 4 and flat.tolist() == [False, True]  # zero variance: zero advantage
    unscaled, _ = group_advantages(rewards, 4, scale=False)
    assert unscaled[:4].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_clipped_objective_and_kl_by_hand():
    logps = torch.tensor([[math.log(0.5), math.log(0.9)], [math.log(0.2), math.log(0.3)]])
    old = torch.tensor([[math.log(0.25), math.log(0.9)], [math.log(0.4), math.log(0.3)]])
    ref = torch.tensor([[math.log(0.4), math.log(0.8)], [math.log(0.2), math.log(0.5)]])
    adv = torch.tensor([1.0, -2.0])
    loss, kl = grpo_token_loss(logps, old, ref, adv, 0.2, 0.28, beta=0.1)
    # ratios 2.0, 1.0 (A=1: min(2, 1.28)=1.28, min(1, 1)=1); 0.5, 1.0 (A=−2: min(−1, −1.6)=−1.6, −2)
    k3 = [[0.4 / 0.5 - math.log(0.8) - 1, 0.8 / 0.9 - math.log(0.8 / 0.9) - 1], [0.0, 0.5 / 0.3 - math.log(5 / 3) - 1]]
    assert kl.flatten().tolist() == pytest.approx(sum(k3, []), abs=1e-6)
    expected = [[-1.28 + 0.1 * k3[0][0], -1.0 + 0.1 * k3[0][1]], [1.6 + 0.1 * k3[1][0], 2.0 + 0.1 * k3[1][1]]]
    assert loss.flatten().tolist() == pytest.approx(sum(expected, []), abs=1e-6)
    mask = torch.tensor([[1, 1], [1, 0]])
    grpo_sum, grpo_n = grpo_reduce(loss, mask, "grpo", 4)  # mean of per-sequence means
    assert (grpo_sum / grpo_n).item() == pytest.approx(((expected[0][0] + expected[0][1]) / 2 + expected[1][0]) / 2)
    dr_sum, dr_n = grpo_reduce(loss, mask, "dr_grpo", 4)  # token sum / (sequences · max length)
    assert (dr_sum / dr_n).item() == pytest.approx((expected[0][0] + expected[0][1] + expected[1][0]) / (2 * 4))
    dapo_sum, dapo_n = grpo_reduce(loss, mask, "dapo", 4)  # token sum / tokens
    assert (dapo_sum / dapo_n).item() == pytest.approx((expected[0][0] + expected[0][1] + expected[1][0]) / 3)


def test_reward_functions_on_known_strings():
    examples = [{"messages": [], "answers": ["Denver Broncos", "Broncos"]}] * 3
    texts = ["the Broncos.", "Denver", "Carolina Panthers won"]
    assert R.ExactMatch(settings())(texts, examples) == [1.0, 0.0, 0.0]
    assert R.TokenF1(settings())(texts, examples) == pytest.approx([1.0, 2 / 3, 0.0])
    assert R.Regex(settings(pattern=r"^\w+ \w+$"))(texts, examples) == [0.0, 0.0, 0.0]
    assert R.Regex(settings(pattern=r"won$"))(texts, examples) == [0.0, 0.0, 1.0]
    assert R.Length(settings(max_words=2))(texts, examples) == [0.0, 0.0, -0.5]
    combined = R.build(["exact_match", "length"], [1.0, 2.0], settings(max_words=2))
    assert [w for _, w in combined] == [1.0, 2.0]
    with pytest.raises(FtuneError, match="task.reward_settings.pattern"):
        R.Regex(settings())
    with pytest.raises(FtuneError, match=r"x.jsonl:2: no reference answer for reward `exact_match`"):
        R.ExactMatch(settings()).check([{"answers": ["a"]}, {"answers": [], "where": "x.jsonl:2"}])


def test_unknown_reward_name_suggests_the_nearest():
    cfg = OmegaConf.merge(defaults("task", "grpo"), {"rewards": ["exact_macth"]})
    with pytest.raises(FtuneError, match=r"task.rewards: unknown reward function `exact_macth` \(did you mean `exact_match`"):
        GrpoTask.validate(cfg)
    with pytest.raises(FtuneError, match="task.reward_weights"):
        GrpoTask.validate(OmegaConf.merge(defaults("task", "grpo"), {"reward_weights": [1.0, 2.0]}))


@pytest.mark.slow
def test_bad_inputs_exit_2(tmp_path, capsys):
    assert cli_exit_code("train", "task=grpo", "task.rewards=[exact_macth]") == 2
    err = capsys.readouterr().err
    assert "unknown reward function `exact_macth`" in err and "exact_match" in err and len(err.strip().splitlines()) == 1


PROMPTS = [{"prompt": p} for p in ("hello , how are you ?", "what colour is the sky ?", "translate this sentence",
                                   "summarize the long story", "Paris is the capital", "the cat sat on the mat")]


@pytest.mark.slow
def test_prompts_without_answers_for_exact_match(tiny_llama_dir, tmp_path, capsys):
    train = write_data(tmp_path / "p.jsonl", [{**PROMPTS[0], "answer": "fine"}, PROMPTS[1]])
    assert cli_exit_code("train", "task=grpo", f"model.name_or_path={tiny_llama_dir}", "model.name=tiny",
                         f"task.data.train={train}", "task.max_length=64", f"run_dir={tmp_path / 'r'}") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ftune:")]
    assert len(err) == 1 and "p.jsonl:2: no reference answer for reward `exact_match`" in err[0]


@pytest.mark.slow
def test_a_tiny_seeded_run_raises_a_learnable_reward(tiny_llama_dir, tmp_path):
    """Reward 1 when the completion starts with a vowel: the tiny random model (full fine-tuning, seeded)
    raises its mean reward by more than 0.2 within 12 steps (a LoRA of 1,792 parameters learns too slowly
    for a quick test; tests/tasks/test_grpo.py::test_lora_step checks the LoRA path)."""
    train = write_data(tmp_path / "p.jsonl", PROMPTS)
    run_dir = tmp_path / "run"
    run_cli("train", "task=grpo", f"model.name_or_path={tiny_llama_dir}", "model.name=tiny", "peft=none",
            "task.beta=0", f"task.data.train={train}", "task.rewards=[regex]", "task.reward_settings.pattern='^[aeiouAEIOU]'",
            "task.num_generations=8", "task.generation.max_new_tokens=3", "task.max_length=64", "trainer.max_steps=12",
            "trainer.batch_size=3", "trainer.log_every=1", "optimizer.lr=3e-2", "trainer.seed=0", "logger.console=none",
            f"run_dir={run_dir}", "overwrite=true")
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [s["task/reward"] for s in steps if s.get("event") == "train"]
    assert len(rewards) == 12 and all("task/zero_std_groups" in s for s in steps if s.get("event") == "train")
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.2, rewards


def test_lora_step(tiny_llama_dir, chat_tokenizer):
    """One training forward under LoRA: groups sampled, the reference is the adapter switched off (KL 0 on an
    untrained adapter), the loss finite and differentiable, the task's figures reported once."""
    from peft import LoraConfig, get_peft_model

    task = GrpoTask(OmegaConf.merge(defaults("task", "grpo"), {"rewards": ["regex"], "num_generations": 4,
                                                                "reward_settings": {"pattern": "^[aeiou]"},
                                                                "generation": {"max_new_tokens": 3}, "max_length": 64}))
    examples = list(task._iter_examples(iter(PROMPTS[:2]), "x", False))
    batch = task.collate(task.featurize(examples, chat_tokenizer))
    model = get_peft_model(task.build_model(str(tiny_llama_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    _, loss_sum, targets = task.forward(model, batch)
    loss_sum.backward()
    assert torch.isfinite(loss_sum) and 0 < int(targets) <= 2 * 4 * 3  # dapo: completion tokens
    stats = task.train_stats()
    assert stats["task/kl"] == pytest.approx(0.0, abs=1e-6) and 1 <= stats["task/completion_length"] <= 3
    assert set(stats) >= {"task/reward", "task/reward_std", "task/zero_std_groups", "task/reward_regex"}
    assert task.train_stats() == {}
