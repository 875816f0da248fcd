"""`ftune export format=gguf`: a tiny Llama sft run round-trips (same greedy tokens), its template included."""

from __future__ import annotations

import json

import pytest

from tests import deploy_fixtures as F
from tests.conftest import run_cli
from tests.inference.test_saved_settings import _cli_exit

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def exported(sft_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "out"
    run_cli("export", f"run_dir={sft_run}", "format=gguf", f"out={out}")
    return out


def test_round_trip_gives_the_same_greedy_tokens(exported, sft_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((exported / "ftune.json").read_text())["export"]
    assert meta["checked_prompts"] >= 1 and meta["modelfile"]
    tokenizer = AutoTokenizer.from_pretrained(sft_run / "best")
    original = AutoModelForCausalLM.from_pretrained(sft_run / "best").eval()
    loaded = AutoModelForCausalLM.from_pretrained(exported, gguf_file="model.gguf").eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "what colour is the sky ?"}],
                                           add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    kwargs = {"max_new_tokens": 10, "do_sample": False, "attention_mask": torch.ones_like(ids),
              "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        assert torch.equal(original.generate(ids, **kwargs), loaded.generate(ids, **kwargs))
        assert (original(ids).logits - loaded(ids).logits).abs().max() < 1e-4


def test_the_chat_template_is_in_the_file_and_the_modelfile(exported, sft_run):
    from transformers import AutoTokenizer

    from ftune.export.gguf import render_parts, template_parts

    reader = gguf.GGUFReader(str(exported / "model.gguf"))
    field = reader.fields["tokenizer.chat_template"]
    stored = bytes(field.parts[field.data[0]]).decode()
    tokenizer = AutoTokenizer.from_pretrained(sft_run / "best")
    assert stored == tokenizer.chat_template and "<|im_start|>" in stored
    modelfile = (exported / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in modelfile
    conversation = F.CHAT[:3]
    assert render_parts(template_parts(tokenizer), conversation) == tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True)


def test_gguf_refusals(ner_run, sft_run, tmp_path, capsys):
    assert _cli_exit("export", f"run_dir={ner_run}", "format=gguf", f"out={tmp_path / 'x'}") == 2
    assert "format=gguf covers Llama-family causal LMs" in capsys.readouterr().err
    assert _cli_exit("export", f"run_dir={sft_run}", "format=gguf", "gguf_dtype=q4", f"out={tmp_path / 'x'}") == 2
    assert not (tmp_path / "x").exists()
