"""Parameter-efficient fine-tuning through the peft library: LoRA, AdaLoRA, (IA)^3, prefix and prompt tuning.

`wrap` turns a task's model into a PeftModel as configured in the `peft` group. The pretrained body is
frozen; the task head (the modules outside the body, e.g. `classifier`) trains in full; tokens a task adds
to the vocabulary (relation markers) train through LoRA's trainable-token deltas. A PEFT run's checkpoints
and best/ hold only what trained: an adapter folder (adapter_config.json, adapter_model.safetensors) plus
the tokenizer and `base_config.json`, the base model's config with the task's labels.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError, did_you_mean
from ftune.registry import peft_plugin

log = logging.getLogger("ftune")
BASE_CONFIG = "base_config.json"
ADAPTER_CONFIG = "adapter_config.json"

# peft's task types, from the class of the model a task builds (so no task is named here)
_TASK_TYPES = (("ForTokenClassification", "TOKEN_CLS"), ("ForSequenceClassification", "SEQ_CLS"),
               ("ForQuestionAnswering", "QUESTION_ANS"), ("ForCausalLM", "CAUSAL_LM"),
               ("ForConditionalGeneration", "SEQ_2_SEQ_LM"), ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"))
_GENERATIVE = ("CAUSAL_LM", "SEQ_2_SEQ_LM")


def is_active(cfg: Any) -> bool:
    return cfg.name != "none"


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def task_type(model: torch.nn.Module) -> str:
    name = type(model).__name__
    for suffix, kind in _TASK_TYPES:
        if name.endswith(suffix):
            return kind
    raise FtuneError(f"peft has no task type for {name}", where="peft", fix="use peft=none with this task")


def head_modules(model: torch.nn.Module) -> list[str]:
    """Modules outside the pretrained body: the task's freshly initialised head, trained in full.
    Generative models have none (their LM head is pretrained and stays frozen)."""
    if task_type(model) in _GENERATIVE:
        return []
    body = model.base_model_prefix
    return [name for name, child in model.named_children()
            if name != body and any(True for _ in child.parameters())]


def build_config(cfg: Any, model: torch.nn.Module, total_steps: int, new_token_ids: list[int]):
    """The peft config object for `cfg` (the `peft` group), checked against the model and task: the method's
    plug-in (ftune/peft_methods.py) gives peft's config class and its arguments; `peft.args` adds any other
    field of that class."""
    method = peft_plugin(cfg.name)
    kind = task_type(model)
    args = {"task_type": kind, "inference_mode": False}
    head = head_modules(model)
    if head:
        args["modules_to_save"] = head
    if new_token_ids and not method.lora_weights:
        raise FtuneError(f"this task adds {len(new_token_ids)} token(s) to the vocabulary (e.g. entity markers) "
                         f"whose embeddings must train; peft `{cfg.name}` cannot train them",
                         where="peft", fix="use peft=lora (it trains the new tokens) or peft=none")
    config_class, method_args = method.build(cfg, model, total_steps, new_token_ids)
    args.update(method_args)
    extra = OmegaConf.to_container(cfg.args, resolve=True) if OmegaConf.is_config(cfg.args) else dict(cfg.args)
    fields = set(config_class.__dataclass_fields__)
    for key in extra:
        if key not in fields:
            hint = did_you_mean(key, sorted(fields))
            raise FtuneError(f"`{config_class.__name__}` has no field `{key}`", where=f"peft.args.{key}",
                             fix=hint or "see the peft documentation of this method")
    args.update(extra)
    if method.virtual_tokens:
        args.pop("modules_to_save", None)  # peft adds the classifier itself for prompt learning
    return config_class(**args)


def wrap(model: torch.nn.Module, cfg: Any, total_steps: int, new_token_ids: list[int]):
    """The PeftModel for `model`; user-facing errors for methods that do not fit the model or task."""
    from peft import get_peft_model

    config = build_config(cfg, model, total_steps, new_token_ids)
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        # QLoRA: the unquantised weights (norms, embeddings) in fp32 and, under gradient checkpointing,
        # inputs that require gradients, so the frozen 4/8-bit layers still pass gradients to the adapters
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(getattr(model, "is_activation_checkpointing", False)))
    method = peft_plugin(cfg.name)
    method.check_model(model)
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:
        first = str(error).strip().splitlines()[0]
        raise FtuneError(f"peft `{cfg.name}` does not fit {type(model).__name__}: {first}", where="peft.target_modules",
                         fix="name the model's projection modules, e.g. peft.target_modules=[query,value]") from error
    method.after_wrap(wrapped, model, cfg)
    if new_token_ids:
        # peft would save the whole resized embedding matrix (half of MiniLM); the new tokens' rows are
        # saved by the trainable-token adapter already, and the other rows are the base model's
        wrapped.save_pretrained = functools.partial(wrapped.save_pretrained, save_embedding_layers=False)
    return wrapped


def added_token_ids(model: torch.nn.Module, pretrained: str) -> list[int]:
    """Ids of the tokens a task added to the pretrained vocabulary (rows beyond its embedding matrix)."""
    from transformers import AutoConfig

    before = getattr(AutoConfig.from_pretrained(pretrained), "vocab_size", None)
    now = model.get_input_embeddings().num_embeddings
    return list(range(before, now)) if before and now > before else []


def prefix_tuning_fits(model: torch.nn.Module) -> bool:
    """Whether peft can feed this model its prefix as past key values with the installed libraries.

    peft passes the prefix as the keyword `past_key_values`. Generative models get it straight in their forward,
    where transformers ≥ 5.24 maps the old name to `cache` (a deprecation shim until 5.40); for classification and
    QA models peft first checks the backbone's signature for `past_key_values` and refuses when it is `cache`.
    """
    import inspect

    body = getattr(model, model.base_model_prefix, model)
    parameters = inspect.signature(body.forward).parameters
    if "past_key_values" in parameters:
        return True
    return task_type(model) in _GENERATIVE and "cache" in parameters


def drop_virtual_positions(model: torch.nn.Module, count: int) -> None:
    """Prompt tuning prepends `count` virtual tokens, so per-token outputs (token logits, QA start/end
    logits) have `count` extra leading positions; drop them so they line up with the input again."""

    def hook(module, args, kwargs, outputs):
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            return outputs
        length = input_ids.shape[1]
        for key, value in outputs.items():
            if torch.is_tensor(value) and value.dim() >= 2 and value.shape[1] == length + count:
                outputs[key] = value[:, count:]
        return outputs

    model.register_forward_hook(hook, with_kwargs=True)


def step_hook(model: torch.nn.Module, cfg: Any):
    """The method's hook after each optimizer step, before the gradients are cleared (AdaLoRA's ranks), or None."""
    return peft_plugin(cfg.name).step_hook(model)


def target_list(value: Any) -> list[str] | str | None:
    if value is None or isinstance(value, str):  # "all-linear": every linear layer but the head
        return value
    return list(value)


# ---- run folders ---------------------------------------------------------------------------------------
class BaseConfigWriter:
    """An `extras` entry of the engine: writes base_config.json (the base model's config, with the task's
    labels and vocabulary size) next to the adapter, which is all eval, predict and export need."""

    def __init__(self, config):
        self.config = config

    def save_pretrained(self, folder: str | Path) -> None:
        self.config.to_json_file(str(Path(folder) / BASE_CONFIG))


def adapter_method(folder: Path) -> str:
    """peft's name of the method an adapter folder was trained with, e.g. LORA, PROMPT_TUNING."""
    return json.loads((Path(folder) / ADAPTER_CONFIG).read_text())["peft_type"]


def base_model_path(folder: Path) -> str:
    return json.loads((Path(folder) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def load_adapter_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load an adapter folder's weights into a PeftModel of the same configuration."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(Path(folder) / "adapter_model.safetensors")))
    # prompt learning's embeddings are loaded by name, and then reported as unexpected by load_state_dict
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if k != "prompt_embeddings"]
    if unexpected:
        raise FtuneError(f"adapter weights in {folder} do not fit the model (unexpected {unexpected[:3]})",
                         where="checkpoint")


def load_trained(base: torch.nn.Module, folder: Path, trainable: bool = False):
    """A trained adapter on its base model (for resume, eval, predict and export)."""
    from peft import PeftModel

    config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
    model = PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
    if config.get("peft_type") == "PROMPT_TUNING" and task_type(base) in ("TOKEN_CLS", "QUESTION_ANS"):
        drop_virtual_positions(model, config["num_virtual_tokens"])
    return model


def merge(model: torch.nn.Module, method: str) -> torch.nn.Module:
    """The base model with the adapter folded into its weights (a plain transformers model)."""
    if method in ("PREFIX_TUNING", "PROMPT_TUNING"):
        raise FtuneError(f"{method.lower()} adds virtual tokens, which cannot be merged into the weights",
                         where="merge", fix="export with merge=false (the adapter folder), or train with peft=lora")
    return model.merge_and_unload()
