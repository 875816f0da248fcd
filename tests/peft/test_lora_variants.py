"""LoRA variants and training tricks: DoRA and rsLoRA (merge equivalence), LoRA+ (B's learning rate), NEFTune."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from ftune import peft
from ftune.errors import FtuneError
from ftune.optim import build_optimizer, build_scheduler
from ftune.registry import defaults
from ftune.tasks.sft import add_neftune
from tests.conftest import run_cli, write_data


def lora_cfg(name: str, **settings):
    flags = {"use_dora": name == "dora", "use_rslora": name == "rslora"}
    return OmegaConf.merge(defaults("peft", "lora"), {"name": name, "dropout": 0.0, **flags, **settings})


def causal_lm(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("name", ["dora", "rslora"])
def test_variant_merges_into_the_base_weights(name, tiny_llama_dir):
    model = peft.wrap(causal_lm(tiny_llama_dir), lora_cfg(name, r=4, alpha=8), 10, [])
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    if name == "dora":
        assert "default" in layer.lora_magnitude_vector  # a trained magnitude per output feature
    else:
        assert layer.scaling["default"] == pytest.approx(8 / math.sqrt(4))  # alpha/sqrt(r), not alpha/r
    torch.manual_seed(0)
    with torch.no_grad():  # as after training: B (and DoRA's magnitude) away from their initial values
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name or "magnitude" in param_name:
                param.add_(torch.randn_like(param) * 0.3)
    ids = torch.tensor([[5, 17, 42, 99, 7, 250, 3]])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = peft.merge(model, "LORA")
        after = merged(input_ids=ids).logits
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (before - after).abs().max().item() < 1e-4
    assert (before - causal_lm(tiny_llama_dir)(input_ids=ids).logits).abs().max().item() > 1e-3  # not a no-op


def test_dora_trains_and_exports_merged_through_the_cli(tiny_llama_dir, tmp_path):
    chat = [{"messages": [{"role": "user", "content": "what colour is the sky ?"},
                          {"role": "assistant", "content": "the sky is blue"}]}] * 8
    data = tmp_path / "chat.jsonl"
    write_data(data, chat)
    run_dir = tmp_path / "run"
    run_cli("train", "task=sft", f"model.name_or_path={tiny_llama_dir}", "model.name=tiny", "peft=dora",
            f"task.data.train={data}", f"task.data.validation={data}", "trainer.max_steps=2", "trainer.batch_size=4", "task.max_length=128",
            "optimizer.lr=1e-2", "optimizer.loraplus_lr_ratio=16", "logger.console=none", "logger.report=false",
            f"run_dir={run_dir}")
    assert json.loads((run_dir / "best" / "adapter_config.json").read_text())["use_dora"] is True
    run_cli("export", f"run_dir={run_dir}", "merge=true", f"out={tmp_path / 'merged'}")  # refuses beyond 1e-4
    assert (tmp_path / "merged" / "config.json").is_file() and not (tmp_path / "merged" / "adapter_config.json").exists()


def test_loraplus_gives_b_the_larger_learning_rate(tiny_llama_dir):
    model = peft.wrap(causal_lm(tiny_llama_dir), lora_cfg("lora", r=4), 10, [])
    cfg = OmegaConf.merge(defaults("optimizer", "adamw"), {"name": "adamw", "lr": 1e-3, "loraplus_lr_ratio": 16})
    optimizer = build_optimizer(cfg, model)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    a = [lr_of[id(p)] for n, p in named.items() if "lora_A" in n]
    b = [lr_of[id(p)] for n, p in named.items() if "lora_B" in n]
    assert a and b and set(a) == {1e-3} and b == pytest.approx([16e-3] * len(b))
    scheduler = build_scheduler(OmegaConf.create({"name": "linear", "warmup_steps": 0, "warmup_ratio": 0.0}), optimizer, 4)
    optimizer.step()
    scheduler.step()  # the schedule scales both rates alike: the ratio holds
    rates = {group["lr"] for group in optimizer.param_groups if group["params"]}
    assert max(rates) / min(rates) == pytest.approx(16)
    plain = build_optimizer(OmegaConf.merge(cfg, {"loraplus_lr_ratio": None}), model)
    assert {g["lr"] for g in plain.param_groups} == {1e-3}


def test_loraplus_without_lora_is_refused_before_anything_runs(compose_config):
    from ftune.run import validate_train_config

    with pytest.raises(FtuneError, match="optimizer.loraplus_lr_ratio"):
        validate_train_config(compose_config("train", ["optimizer.loraplus_lr_ratio=16", "peft=ia3"]))
    validate_train_config(compose_config("train", ["optimizer.loraplus_lr_ratio=16", "peft=rslora"]))


def test_neftune_noise_in_training_only(tiny_llama_dir):
    plain, noisy = causal_lm(tiny_llama_dir), causal_lm(tiny_llama_dir)
    add_neftune(noisy, 5.0)
    ids = torch.tensor([[5, 17, 42, 99, 7, 250, 3]])
    with torch.no_grad():
        plain.train(), noisy.train()
        reference = plain(input_ids=ids).logits
        first, second = noisy(input_ids=ids).logits, noisy(input_ids=ids).logits
        assert (first - reference).abs().max() > 1e-4 and (first - second).abs().max() > 1e-4  # fresh noise per pass
        plain.eval(), noisy.eval()  # evaluation, predict and chat run the model in eval mode: no noise
        torch.testing.assert_close(noisy(input_ids=ids).logits, plain(input_ids=ids).logits)
        generated = noisy.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
        torch.testing.assert_close(generated, plain.generate(input_ids=ids, max_new_tokens=5, do_sample=False))
    with pytest.raises(FtuneError, match="task.neftune_alpha"):
        add_neftune(noisy, -1.0)
