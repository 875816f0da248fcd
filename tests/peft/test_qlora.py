"""QLoRA: model.quantization=nf4|int8 (bitsandbytes, on the CPU here) with LoRA on a tiny Llama."""

import importlib.util
import json

import pytest
import torch

from tests.conftest import run_cli, write_data

# find_spec, not importorskip: importing bitsandbytes costs ~3 s in every collecting worker; the tests import it
pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                                reason="the quant extra (bitsandbytes) is not installed")
CHAT = [{"role": "user", "content": "what colour is the sky ?"}, {"role": "assistant", "content": "the sky is blue"}]


def _overrides(tiny_llama_dir, data, run_dir, quantization="nf4"):
    return ["task=sft", f"task.data.train={data}", f"task.data.validation={data}", f"model.name_or_path={tiny_llama_dir}",
            "model.name=tiny", f"model.quantization={quantization}", "peft=lora", "optimizer.lr=1e-2",
            "trainer.max_steps=3", "trainer.batch_size=4", "trainer.precision=fp32", "logger.console=none",
            "task.generation.max_new_tokens=4", "task.max_length=128",  # the tiny Llama has 256 positions
            f"run_dir={run_dir}"]


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qlora") / "chat.jsonl"
    write_data(path, [{"messages": CHAT}, {"prompt": "hello", "response": "fine"}] * 4)
    return path


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_llama_dir, chat_file, compose_config):
    """A QLoRA run, with the model's whole state (4-bit bytes included) captured before and after fit()."""
    from ftune.commands import train
    from ftune.engine.loop import Engine

    run_dir = tmp_path_factory.mktemp("qlora-run") / "run"
    seen = {}
    fit = Engine.fit

    def recording_fit(self, *args, **kwargs):
        model = self.accelerator.unwrap_model(self.model)
        seen["before"] = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        seen["model"] = model
        state = fit(self, *args, **kwargs)
        seen["after"] = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        return state

    Engine.fit = recording_fit
    try:
        results = train.run(compose_config("train", _overrides(tiny_llama_dir, chat_file, run_dir)))
    finally:
        Engine.fit = fit
    return run_dir, results, seen


def test_only_the_adapter_trains_and_the_4bit_base_stays_bit_identical(qlora_run, tiny_llama_dir):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    run_dir, results, seen = qlora_run
    model = seen["model"]
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(m.weight.dtype == torch.uint8 for m in quantized)  # really 4-bit storage
    before, after = seen["before"], seen["after"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("lora_" in k for k in moved), sorted(moved)[:5]
    assert any(k.endswith(".weight") and before[k].dtype == torch.uint8 for k in before if k not in moved)
    best = sorted(p.name for p in (run_dir / "best").iterdir())
    assert "adapter_model.safetensors" in best and "model.safetensors" not in best
    assert results["peft"] == "lora" and results["steps"] == 3
    base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llama_dir).parameters())
    counts = results["parameters"]  # packed 4-bit weights counted as the weights they stand for
    assert counts["total"] == base + counts["trainable"]


def test_eval_predict_and_export_of_a_qlora_run(qlora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from ftune.commands import export

    run_dir, results, _ = qlora_run
    run_cli("eval", f"run_dir={run_dir}")  # the adapter on the base quantised as in training: the same loss
    evaluated = json.loads((run_dir / "eval_validation.json").read_text())
    assert evaluated["loss"] == pytest.approx(results["validation"]["loss"], rel=1e-4)
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("what colour is the sky ?\n")
    run_cli("predict", f"run_dir={run_dir}", f"input={source}", f"output={target}")
    assert isinstance(json.loads(target.read_text().splitlines()[0])["response"], str)

    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"run_dir": str(run_dir), "out": str(tmp_path / "merged"), "checkpoint": "best",
                            "merge": True, "check": True, "overwrite": False})
    result = export.run(cfg)
    assert result["merged"] and result["max_difference"] < 1e-4  # the merge itself is exact (fp32 base)
    assert result["quantization"] == "nf4" and 0 < result["quantization_relative_difference"] < 0.25
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not hasattr(merged.config, "quantization_config") and merged.dtype == torch.float32


def test_int8_base_trains_an_adapter(tiny_llama_dir, chat_file, tmp_path, compose_config):
    from ftune.commands import train

    results = train.run(compose_config("train", [*_overrides(tiny_llama_dir, chat_file, tmp_path / "run", "int8"),
                                                 "trainer.max_steps=1"]))
    assert results["steps"] == 1 and (tmp_path / "run" / "best" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(("override", "message"), [
    (["peft=none"], "trains only through LoRA adapters"),
    (["model.quantization=fp8"], "unknown value `fp8`"),
    (["trainer.strategy=fsdp"], "cannot be sharded by FSDP2"),
])
def test_quantization_errors_are_one_line(override, message, tiny_llama_dir, chat_file, tmp_path, compose_config):
    from ftune.commands import train
    from ftune.errors import FtuneError

    with pytest.raises(FtuneError, match=message) as error:
        train.run(compose_config("train", [*_overrides(tiny_llama_dir, chat_file, tmp_path / "run"), *override]))
    assert error.value.where == "model.quantization"
    assert not (tmp_path / "run" / "config.yaml").exists()
