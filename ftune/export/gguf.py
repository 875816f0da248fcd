"""`ftune export format=gguf`: a Llama-family causal LM (an sft run; LoRA merged first) as one model.gguf.

llama.cpp's converter is not on PyPI, so the file is written here with the `gguf` package's GGUFWriter,
following llama.cpp's conventions for the llama architecture: tensor names from gguf's own name map (the
one transformers reads back with), query/key rows permuted per head, hyper-parameters under `llama.*`,
and the byte-level BPE tokenizer (tokens, types, merges, special ids) with the chat template used in
training. The file is checked by reading it back with transformers (`gguf_file=`): the same token ids
for the run's prompts and the same greedy tokens as the PyTorch model, or nothing is written. An Ollama
`Modelfile` carries the same chat template, translated to Go's template syntax and checked by rendering.
llama-cpp-python is not used: PyPI has no wheel of it for this machine (building it takes too long).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftune.errors import FtuneError
from ftune.export import check_examples
from ftune.export.gguf_pre import base_gguf_file, names, pre_tokenizer

log = logging.getLogger("ftune")
DTYPES = {"f32": np.float32, "f16": np.float16}
CHECK_PROMPTS = 8
CHECK_TOKENS = 12
# read back, these tokenise as the run's tokenizer does (digits, currency, punctuation runs, Unicode, whitespace)
TRICKY = ["Price: $1,234.56 (approx.) -- ok?", "3 33 333 3333 33333 3.14159", "I've been 'told he's there...!!!???",
          "naïve café — 東京 😶\u200d🌫️ Привет", "  two  spaces\n\n\ttab\r\nend  ", "a\u00a0b\u2009c", "```python\nx=1\n```"]


def export_gguf(inference: Any, model: Any, out: Path, dtype: str, check: bool) -> dict:
    """`inference`: the run's loaded Inference (task, tokenizer); `model`: what to write (the adapter merged)."""
    import gguf

    task, tokenizer = inference.task, inference.tokenizer
    if not task.gguf_export or getattr(model.config, "model_type", None) != "llama":
        raise FtuneError(f"format=gguf covers Llama-family causal LMs (an sft run), not task={task.name} "
                         f"({getattr(model.config, 'model_type', '?')})", where="format",
                         fix="use format=hf, or format=onnx for an encoder task")
    if dtype not in DTYPES:
        raise FtuneError(f"unknown gguf_dtype `{dtype}`", where="gguf_dtype", fix="choose from: f32, f16")
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise FtuneError(f"rope scaling `{rope.get('rope_type')}` is not written by this exporter", where="format=gguf",
                         fix="use format=hf")
    model = model.float().eval()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    pre, found_by = pre_tokenizer(tokenizer, base_gguf_file(inference.settings))
    log.info("GGUF pre-tokenizer `%s` (from %s)", pre, found_by)
    named = names(inference.settings, task.name, inference.folder.name)
    _hyperparameters(writer, config, rope, dtype, named)
    _tokenizer(writer, tokenizer, config.vocab_size, pre)
    for name, tensor in _tensors(model, config):
        array = tensor.detach().float().numpy()
        # norms stay f32, as llama.cpp writes them; matrices take the chosen type
        writer.add_tensor(name, array.astype(DTYPES[dtype] if array.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = {"format": "gguf", "gguf_dtype": dtype, "file": str(path.name), "pre_tokenizer": pre,
              "pre_tokenizer_from": found_by, "name": named["name"]}
    if check:
        result.update(_check(inference, model, out))
    modelfile = ollama_modelfile(tokenizer)
    if modelfile is None:
        log.warning("the chat template could not be translated for Ollama: no Modelfile written")
    else:
        (out / "Modelfile").write_text(modelfile)
    result["modelfile"] = modelfile is not None
    return result


def _hyperparameters(writer, config, rope: dict, dtype: str, named: dict) -> None:
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(named["name"])  # not a local path: what llama.cpp and Ollama show
    writer.add_basename(named["basename"])
    writer.add_finetune(named["finetune"])
    if named["base_repo_url"]:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, named["basename"])
        writer.add_base_model_repo_url(0, named["base_repo_url"])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)


def _tokenizer(writer, tokenizer, vocab_size: int, pre: str) -> None:
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(state.get("pre_tokenizer")):
        raise FtuneError("format=gguf writes byte-level BPE tokenizers (GPT-2 style) only", where="format=gguf",
                         fix="use format=hf")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    types = [gguf.TokenType.CONTROL if i in special or (t in added and added[t].special)
             else gguf.TokenType.USER_DEFINED if t in added else gguf.TokenType.NORMAL for i, t in enumerate(tokens)]
    for i in range(len(tokens), vocab_size):  # embedding rows beyond the tokenizer
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)  # llama.cpp's regex for splitting text before BPE (gguf_pre.py)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                           ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    ids = tokenizer("x")["input_ids"]
    writer.add_add_bos_token(bool(ids) and ids[0] == tokenizer.bos_token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _permute(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's row order for query/key projections (rotary halves interleaved per head)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensors(model, config):
    """(gguf name, tensor) for every weight, named as transformers' GGUF loader expects."""
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    to_gguf = {hf: name for name, hf in get_gguf_hf_weights_map(model, TensorProcessor()).items()}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # the reader ties it to token_embd again
        if hf_name not in to_gguf:
            raise FtuneError(f"no GGUF name for the weight `{hf_name}`", where="format=gguf", fix="use format=hf")
        if hf_name.endswith("self_attn.q_proj.weight"):
            tensor = _permute(tensor, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            tensor = _permute(tensor, kv_heads)
        yield to_gguf[hf_name], tensor


def _check(inference: Any, model: Any, out: Path) -> dict:
    """Read the file back with transformers: same token ids, same greedy tokens as the PyTorch model."""
    from dataclasses import replace

    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task, tokenizer = inference.task, inference.tokenizer
    examples = check_examples(task, CHECK_PROMPTS)
    prompts = [inference.prompt(ex["messages"]) for ex in examples][:CHECK_PROMPTS]
    loaded_tokenizer = AutoTokenizer.from_pretrained(str(out), gguf_file="model.gguf")
    texts = [task.render(ex["messages"][: max(i for i, m in enumerate(ex["messages"]) if m["role"] != "assistant") + 1],
                         generation_prompt=True) for ex in examples]
    for text in texts + TRICKY:
        if loaded_tokenizer(text, add_special_tokens=False)["input_ids"] != tokenizer(text, add_special_tokens=False)["input_ids"]:
            raise FtuneError("the GGUF tokenizer splits the run's prompts differently", where="format=gguf",
                             fix="nothing was written; use format=hf")
    if loaded_tokenizer.chat_template != tokenizer.chat_template:
        raise FtuneError("the chat template did not survive the GGUF file", where="format=gguf")
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model.gguf", dtype=torch.float32).eval()
    # both models generate through Inference, on the CPU in fp32, greedily (the run's sampling settings aside)
    mine = replace(inference, model=model, folder=out, device="cpu", precision="fp32", _engine=None)
    theirs = replace(mine, model=loaded)
    greedy = OmegaConf.merge(task.cfg.generation, {"max_new_tokens": CHECK_TOKENS, "do_sample": False,
                                                   "num_beams": 1, "repetition_penalty": 1.0})
    same, logit_difference = 0, 0.0
    for prompt in prompts:
        with torch.inference_mode():
            ids = torch.tensor([prompt])
            logit_difference = max(logit_difference, (model(ids).logits - loaded(ids).logits).abs().max().item())
        same += int(mine.generate(prompt, greedy)["tokens"] == theirs.generate(prompt, greedy)["tokens"])
    del loaded, theirs
    if same < len(prompts):
        raise FtuneError(f"read back, the GGUF model's greedy tokens differ on {len(prompts) - same} of {len(prompts)} "
                         f"prompts (max |logit difference| {logit_difference:.2e})", where="format=gguf",
                         fix="nothing was written; with gguf_dtype=f16 try f32")
    log.info("GGUF file checked with transformers: same greedy tokens on %d prompts, max |logit difference| %.2e",
             len(prompts), logit_difference)
    return {"checked_prompts": len(prompts), "max_logit_difference": logit_difference}


# ---- Ollama ----------------------------------------------------------------------------------------------
_S, _U, _A = "\x01system\x01", "\x01user\x01", "\x01assistant\x01"


def template_parts(tokenizer) -> dict | None:
    """The chat template cut into per-role pieces (prefix + content + suffix) and the generation prompt,
    found by rendering sentinel conversations; None when the template is not built that way."""
    def render(messages, generation=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    system, user, assistant = ({"role": r, "content": c} for r, c in (("system", _S), ("user", _U), ("assistant", _A)))
    try:
        one, two, three = render([system]), render([system, user]), render([system, user, assistant])
        prompt = render([system, user], generation=True)
        alone = render([user])
    except Exception:  # noqa: BLE001 - a template that needs other roles or orders: no translation
        return None
    if not (two.startswith(one) and three.startswith(two) and prompt.startswith(two)) or one.count(_S) != 1:
        return None
    parts = {"system": one.split(_S), "user": two[len(one):].split(_U), "assistant": three[len(two):].split(_A),
             "generation": prompt[len(two):], "default_system": None}
    if any(len(pair) != 2 for pair in (parts["system"], parts["user"], parts["assistant"])):
        return None
    user_block = parts["user"][0] + _U
    head = alone[: alone.index(user_block)] if user_block in alone else None
    if head is None:
        return None
    if head:  # the template adds a system message of its own when there is none
        pre, suf = parts["system"]
        if not (head.startswith(pre) and head.endswith(suf)):
            return None
        parts["default_system"] = head[len(pre): len(head) - len(suf)]
    return parts


def render_parts(parts: dict, messages: list[dict], generation: bool = True) -> str:
    """What the Go template renders (used to check the translation against the Jinja template)."""
    if messages[0]["role"] != "system" and parts["default_system"] is not None:
        messages = [{"role": "system", "content": parts["default_system"]}, *messages]
    text = "".join(parts[m["role"]][0] + m["content"] + parts[m["role"]][1] for m in messages)
    return text + (parts["generation"] if generation else "")


def ollama_modelfile(tokenizer) -> str | None:
    parts = template_parts(tokenizer) if tokenizer.chat_template else None
    if parts is None:
        return None
    probe = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and?"}]
    for messages in (probe, probe[1:]):
        if render_parts(parts, messages) != tokenizer.apply_chat_template(messages, tokenize=False,
                                                                          add_generation_prompt=True):
            return None

    def go(text: str) -> str:
        return text.replace("{{", '{{ "{{" }}')

    roles = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{go(parts[role][0])}{{{{ .Content }}}}'
                    f"{go(parts[role][1])}" for i, role in enumerate(("system", "user", "assistant")))
    template = f"{{{{- range .Messages }}}}{roles}{{{{ end }}}}{{{{ end }}}}{go(parts['generation'])}"
    lines = ["# Ollama: ollama create <name> -f Modelfile (written by ftune export format=gguf)", "FROM ./model.gguf",
             f'TEMPLATE """{template}"""']
    if parts["default_system"]:
        lines.append(f'SYSTEM """{parts["default_system"]}"""')
    if tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    return "\n".join(lines) + "\n"
