"""task=dpo: the four losses against their closed forms, the reference model, data errors, train end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks.dpo import DpoTask
from tests.conftest import cli_exit_code, run_cli, write_data

PAIRS = [
    {"prompt": "what colour is the sky ?", "chosen": "the sky is blue", "rejected": "the cat sat on the mat"},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello , how are you ?"}],
     "chosen": [{"role": "assistant", "content": "i am fine , thank you"}], "rejected": "das ist ein kleines haus"},
    {"instruction": "summarize the long story", "input": "a dog ran in the park", "chosen": "a dog ran",
     "rejected": "Paris is the capital of France ."},
]


def dpo_task(**settings) -> DpoTask:
    return DpoTask(OmegaConf.merge(defaults("task", "dpo"), settings))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def by_hand(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Summed log-probability of the labelled tokens of one sequence, run alone (no padding), and their count."""
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    picked = [logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != -100]
    return sum(picked), len(picked)


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return dpo_task().build_model(str(tiny_llama_dir)).eval()


def test_replies_are_masked_after_the_prompt(chat_tokenizer):
    task = dpo_task()
    examples = task._examples([{**p, "where": f"x:{i}"} for i, p in enumerate(PAIRS)], "x", True)
    features = task.featurize(examples, chat_tokenizer)
    for feature, pair in zip(features, examples, strict=True):
        for side in ("chosen", "rejected"):
            labels = feature[f"{side}_labels"]
            assert chat_tokenizer.decode([t for t in labels if t != -100]) == pair[side] + "<|im_end|>\n"
    assert examples[2]["messages"][-1]["content"] == "summarize the long story\na dog ran in the park"  # Alpaca


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "orpo", "simpo"])
def test_losses_equal_their_closed_forms(loss, chat_tokenizer, model):
    task = dpo_task(loss=loss, label_smoothing=0.1 if loss == "sigmoid" else 0.0)
    features = task.featurize(task._examples(PAIRS, "x", True), chat_tokenizer)
    batch = task.collate(features)
    reference = {f["key"]: (-30.0 - i, -40.0 + 2 * i) for i, f in enumerate(features)}  # made-up reference sums
    task.reference.update(reference)
    _, loss_sum, pairs = task.forward(model, batch)
    beta, eps, gamma = task.beta, task.cfg.label_smoothing, task.cfg.simpo_gamma
    expected = 0.0
    for f in features:
        (pc, nc), (pr, nr) = by_hand(model, f["chosen_ids"], f["chosen_labels"]), by_hand(model, f["rejected_ids"], f["rejected_labels"])
        rc, rr = reference[f["key"]]
        mc, mr = pc / nc, pr / nr
        if loss == "sigmoid":  # −log σ(β·Δ), conservative: −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)
            h = beta * ((pc - rc) - (pr - rr))
            expected += -(1 - eps) * math.log(sigmoid(h)) - eps * math.log(sigmoid(-h))
        elif loss == "ipo":
            expected += ((mc - rc / nc) - (mr - rr / nr) - 1 / (2 * beta)) ** 2
        elif loss == "simpo":
            expected += -math.log(sigmoid(beta * (mc - mr) - gamma))
        else:  # orpo: NLL of chosen (per token) − λ·log σ(log odds ratio)
            log_odds = (mc - mr) - (math.log(1 - math.exp(mc)) - math.log(1 - math.exp(mr)))
            expected += -mc - beta * math.log(sigmoid(log_odds))
    assert int(pairs) == len(features)
    assert loss_sum.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert task.beta == (2.0 if loss == "simpo" else 0.1)


def test_peft_reference_is_the_base_without_adapter_and_gets_no_gradient(chat_tokenizer, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    task = dpo_task()
    features = task.featurize(task._examples(PAIRS, "x", True), chat_tokenizer)
    batch = task.collate(features)
    base = task.build_model(str(tiny_llama_dir))
    plain = [by_hand(base, f[f"{side}_ids"], f[f"{side}_labels"])[0] for side in ("chosen", "rejected") for f in features]
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained-looking adapter: the policy now differs from the base
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    policy.train()
    chosen, rejected = task.reference_logps(policy, batch)
    assert not chosen.requires_grad and not rejected.requires_grad
    torch.testing.assert_close(torch.cat([chosen, rejected]), torch.tensor(plain), atol=1e-4, rtol=1e-5)
    assert policy.training  # switched back to training after the reference pass
    _, loss_sum, _ = task.forward(policy, batch)
    loss_sum.backward()
    assert all(p.grad is None for n, p in policy.named_parameters() if "lora" not in n)  # the base never learns
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in policy.named_parameters() if "lora_A" in n)
    assert batch["pairs"][:, 1].abs().sum() > 0  # rewards: the adapter moved the policy away from the reference


def test_bad_settings_and_rows_are_refused(tmp_path, capsys):
    # loss and beta are bounded by DpoTaskConfig: refused at composition, before any file is read
    assert cli_exit_code("train", "task=dpo", "task.loss=kto") == 2
    assert "task.loss" in capsys.readouterr().err
    assert cli_exit_code("train", "task=dpo", "task.beta=0.0") == 2
    assert "task.beta" in capsys.readouterr().err
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        PAIRS[0], {"prompt": "q", "chosen": "a"}, {"text": "plain"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "b", "rejected": "c"},
    ]) + "\n")
    with pytest.raises(FtuneError, match=r"3 problem\(s\).*pairs.jsonl:2: `rejected` must be a string.*pairs.jsonl:3: "
                                         r".*no prompt.*pairs.jsonl:4: the prompt ends with an assistant turn"):
        dpo_task().load_file(str(path))


def _write_pairs(folder) -> tuple:
    train, dev = folder / "pairs.jsonl", folder / "dev.jsonl"
    write_data(train, PAIRS * 4)
    write_data(dev, PAIRS)
    return train, dev


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_train_dpo_end_to_end(peft, tiny_llama_dir, tmp_path):
    """LoRA (reference: adapter disabled) and full fine-tuning (reference computed before training, then read
    from the cache by a second run), with gradient accumulation; eval re-reads the run."""
    train, dev = _write_pairs(tmp_path)
    run_dir = tmp_path / "run"
    args = ["train", "task=dpo", f"model.name_or_path={tiny_llama_dir}", "model.name=tiny", f"peft={peft}",
            f"task.data.train={train}", f"task.data.validation={dev}", "trainer.max_steps=3", "trainer.batch_size=4",
            "trainer.grad_accum=2", "optimizer.lr=1e-2", "logger.console=none", "task.select=reward_accuracy", "task.max_length=128",
            f"run_dir={run_dir}", "overwrite=true"]
    run_cli(*args)
    results = json.loads((run_dir / "results.json").read_text())
    val = results["validation"]
    assert results["main_metric"] == "reward_accuracy" and val["pairs"] == 3
    assert val["reward_margin"] == pytest.approx(val["rewards_chosen"] - val["rewards_rejected"], abs=1e-5)
    assert val["reward_margin"] > 0  # three steps at a high learning rate separate the three repeated pairs
    if peft == "lora":
        assert (run_dir / "best" / "adapter_config.json").is_file()
    else:
        from ftune.data.cache import cache_dir

        assert str(tiny_llama_dir) in (run_dir / "config.yaml").read_text()  # the reference model is recorded
        assert list(cache_dir().glob("dpo-reference-*.json"))
    run_cli("eval", f"run_dir={run_dir}")
    again = json.loads((run_dir / "eval_validation.json").read_text())
    assert again["reward_margin"] == pytest.approx(val["reward_margin"], abs=1e-3)
