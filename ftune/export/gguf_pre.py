"""Which pre-tokenizer llama.cpp must use for an exported GGUF (`tokenizer.ggml.pre`), and the file's names.

llama.cpp does not run the Hugging Face pre-tokenizer: it picks a built-in regex by the name in
`tokenizer.ggml.pre`, and a wrong name ("default") splits text such as "Price: $1,234.56" into other tokens
than the model was trained on. The name is found, in order:
1. the base model came from a GGUF file (`model=gguf:...`, e.g. model=smollm2-135m): that file's own value;
2. as llama.cpp's converter (convert_hf_to_gguf.py, `get_vocab_base_pre`) finds it: the SHA-256 of the token
   ids of its check text, looked up in the converter's table (the entries of Llama-family BPE tokenizers
   are copied below; https://github.com/ggml-org/llama.cpp/pull/6920 explains the scheme);
3. a tokenizer whose whole pre-tokenizer is GPT-2's byte-level regex: "gpt-2".
Otherwise the export is refused: writing a guess would tokenise differently without saying so.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ftune.errors import FtuneError

# llama.cpp's check text (convert_hf_to_gguf_update.py): whitespace runs, emoji, digit runs, scripts, quotes
CHECK_TEXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
              "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
              "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
              "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
# hash of the check text's token ids → llama.cpp's pre-tokenizer name (from convert_hf_to_gguf.py)
KNOWN = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5-7B
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral-Nemo
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",
    "ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb": "gigachat",
    "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1": "megrez",
    "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15": "trillion",
}
GPT2_PRE = {"type": "ByteLevel", "use_regex": True}


def check_hash(tokenizer: Any) -> str:
    """llama.cpp's fingerprint of a tokenizer: SHA-256 of str(token ids of CHECK_TEXT)."""
    return hashlib.sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()


def base_gguf_value(base_file: str | None, key: str) -> str | None:
    """A string field of the GGUF file the base model was converted from (None without one)."""
    if not base_file:
        return None
    import gguf

    reader = gguf.GGUFReader(base_file)
    field = reader.fields.get(key)
    return bytes(field.parts[field.data[0]]).decode() if field is not None else None


def pre_tokenizer(tokenizer: Any, base_file: str | None = None) -> tuple[str, str]:
    """(tokenizer.ggml.pre, how it was found) for a byte-level BPE tokenizer."""
    kept = base_gguf_value(base_file, "tokenizer.ggml.pre")
    if kept:
        return kept, "the base model's GGUF file"
    digest = check_hash(tokenizer)
    if digest in KNOWN:
        return KNOWN[digest], "llama.cpp's tokenizer fingerprint"
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    if all(pre.get(k) == v for k, v in GPT2_PRE.items()):
        return "gpt-2", "a plain byte-level (GPT-2) pre-tokenizer"
    raise FtuneError(f"llama.cpp has no pre-tokenizer known to match this tokenizer (fingerprint {digest[:16]}..., "
                     f"pre-tokenizer {json.dumps(pre)[:120]})", where="format=gguf",
                     fix="use format=hf (or convert best/ with llama.cpp's convert_hf_to_gguf.py if it knows the model)")


def base_gguf_file(settings: Any) -> str | None:
    """The GGUF file a run's base model was converted from (`model.name_or_path=gguf:...`), if any."""
    name = str(settings.model.get("name_or_path") or "") if settings is not None else ""
    if not name.startswith("gguf:"):
        return None
    from ftune.paths import resolve

    target = name[len("gguf:"):]
    path = resolve(target if target.startswith(("/", ".", "~")) else f"pkg:{target}", "model.name_or_path")
    return str(path) if path.is_file() else None


def names(settings: Any, task_name: str, folder_name: str) -> dict:
    """general.* names: the base model's (its hub id's last part, else its config name) and this fine-tune."""
    model = settings.model if settings is not None else {}
    source = str(model.get("name_or_path") or "")
    # a preset's hub_id names its packaged copy (pkg:/gguf:); a bare hub id names itself; a local folder, nothing
    hub_id = model.get("hub_id") if source.startswith(("pkg:", "gguf:")) else \
        source if source.count("/") == 1 and not source.startswith((".", "/", "~")) else None
    base = (hub_id.rsplit("/", 1)[-1] if hub_id else None) or model.get("name") or folder_name
    return {"name": f"{base} ftune {task_name}", "basename": base, "finetune": f"ftune-{task_name}",
            "base_repo_url": f"https://huggingface.co/{hub_id}" if hub_id else None}
