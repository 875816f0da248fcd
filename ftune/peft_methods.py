"""The PEFT methods: one class per method, registered with its schema, holding what the rest of ftune asks of
it (ftune/peft.py wraps the model; run.py, commands/train.py and engine/strategy.py call the hooks below and
never compare a method's name). A method's `build` turns its config into peft's config class and arguments.
Adding a method: a class here (or in an out-of-tree module, see docs/extending.md) and configs/peft/<name>.yaml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ftune import registry
from ftune.config.groups import (
    AdaLoraConfig,
    IA3Config,
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
)
from ftune.errors import FtuneError
from ftune.peft import drop_virtual_positions, load_trained, prefix_tuning_fits, target_list, task_type


class PeftMethod:
    """The defaults: an adapter that resumes exactly, shards under FSDP and loads in place."""

    lora_weights: ClassVar[bool] = False  # LoRA A/B matrices: trains tokens a task adds, LoRA+ applies
    virtual_tokens: ClassVar[bool] = False  # prompt learning: peft adds the task head to what trains itself

    # Each method defines `build(cfg, model, total_steps, new_token_ids) -> (peft config class, its arguments)`
    # (the caller adds task type and head); a class without one is refused when it is defined.
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not callable(getattr(cls, "build", None)):
            raise TypeError(f"PEFT method {cls.__name__} must define the classmethod build(cfg, model, total_steps, "
                            f"new_token_ids)")

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Start-up checks of the `peft` group across its keys (ranges are the schema's)."""

    @classmethod
    def check_resume(cls) -> None:
        """Raise when a run with this method cannot continue exactly from a checkpoint."""

    @classmethod
    def check_sharding(cls) -> None:
        """Raise when this method cannot train under trainer.strategy=fsdp."""

    @classmethod
    def check_model(cls, model: Any) -> None:
        """Raise when peft cannot apply this method to `model` with the installed libraries."""

    @classmethod
    def after_wrap(cls, wrapped: Any, model: Any, cfg: Any) -> None:
        """Adjust the PeftModel once built (e.g. output positions)."""

    @classmethod
    def step_hook(cls, model: Any) -> Callable[[int], None] | None:
        """Called with the step number after each optimizer step, gradients still in place; None: nothing."""
        return None

    @classmethod
    def load_best(cls, engine: Any, build_base: Callable[[], Any], folder: Path) -> None:
        """Load the selected adapter (best/) into the engine's model at the end of training."""
        engine.load_weights(folder)  # a sharded model loads through its strategy


def _low_rank(cfg: Any) -> dict:
    return {"lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout, "bias": cfg.bias,
            "target_modules": target_list(cfg.target_modules)}


@registry.peft_method("none", PeftConfig)
class NoAdapter(PeftMethod):
    @classmethod
    def build(cls, cfg: Any, model: Any, total_steps: int, new_token_ids: list[int]) -> tuple[type, dict]:
        raise FtuneError("peft=none trains no adapter", where="peft", fix="choose a method, e.g. peft=lora")


@registry.peft_method("lora", LoraConfig)
class Lora(PeftMethod):
    """LoRA, DoRA (weight = magnitude · direction) and rsLoRA (scale alpha/sqrt(r), not alpha/r): one peft class.
    Tokens a task adds to the vocabulary train through LoRA's trainable-token deltas."""

    lora_weights = True

    @classmethod
    def build(cls, cfg: Any, model: Any, total_steps: int, new_token_ids: list[int]) -> tuple[type, dict]:
        import peft

        args = {**_low_rank(cfg), "r": cfg.r, "use_dora": bool(cfg.get("use_dora")),
                "use_rslora": bool(cfg.get("use_rslora"))}  # .get: runs saved before DoRA had neither key
        if new_token_ids:
            args["trainable_token_indices"] = list(new_token_ids)
        return peft.LoraConfig, args


registry.declare(registry.PEFT_METHODS, "dora", Lora, LoraConfig)  # LoRA with use_dora (configs/peft/dora.yaml)
registry.declare(registry.PEFT_METHODS, "rslora", Lora, LoraConfig)  # LoRA with use_rslora


@registry.peft_method("adalora", AdaLoraConfig)
class AdaLora(PeftMethod):
    """LoRA whose ranks shrink from init_r to target_r during training, by a rank allocator that peft keeps in
    memory only: it steps after each update, cannot be resumed, sharded, or loaded in place."""

    @classmethod
    def build(cls, cfg: Any, model: Any, total_steps: int, new_token_ids: list[int]) -> tuple[type, dict]:
        import peft

        tinit, tfinal = int(cfg.tinit * total_steps), int(cfg.tfinal * total_steps)
        if tinit + tfinal >= total_steps:
            raise FtuneError(f"AdaLoRA needs steps between tinit ({tinit}) and tfinal ({tfinal}) in a run of "
                             f"{total_steps} steps", where="peft.tinit",
                             fix="train for more steps or lower peft.tinit / peft.tfinal")
        return peft.AdaLoraConfig, {**_low_rank(cfg), "init_r": cfg.init_r, "target_r": cfg.target_r,
                                    "tinit": tinit, "tfinal": tfinal, "deltaT": cfg.deltaT, "total_step": total_steps}

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if cfg.init_r < cfg.target_r:
            raise FtuneError(f"AdaLoRA shrinks ranks from init_r to target_r; init_r={cfg.init_r} < "
                             f"target_r={cfg.target_r}", where="peft.init_r", fix="set peft.init_r ≥ peft.target_r")

    @classmethod
    def check_resume(cls) -> None:  # its rank allocator's running scores are not part of what peft saves
        raise FtuneError("AdaLoRA runs cannot be resumed exactly (peft does not save the rank allocator)",
                         where="resume", fix="start a new run, or use peft=lora, whose runs resume exactly")

    @classmethod
    def check_sharding(cls) -> None:
        raise FtuneError("AdaLoRA re-allocates ranks on whole tensors, which FSDP shards",
                         where="peft", fix="use peft=lora with trainer.strategy=fsdp")

    @classmethod
    def step_hook(cls, model: Any) -> Callable[[int], None]:
        return lambda step: model.base_model.update_and_allocate(step)

    @classmethod
    def load_best(cls, engine: Any, build_base: Callable[[], Any], folder: Path) -> None:
        # rebuilt, not loaded in place: AdaLoRA's ranks may differ between saves
        engine.model = engine.accelerator.prepare(load_trained(build_base(), folder))


@registry.peft_method("ia3", IA3Config)
class IA3(PeftMethod):
    @classmethod
    def build(cls, cfg: Any, model: Any, total_steps: int, new_token_ids: list[int]) -> tuple[type, dict]:
        import peft

        return peft.IA3Config, {"target_modules": target_list(cfg.target_modules),
                                "feedforward_modules": target_list(cfg.feedforward_modules)}


@registry.peft_method("prefix_tuning", PrefixTuningConfig)
class PrefixTuning(PeftMethod):
    virtual_tokens = True

    @classmethod
    def build(cls, cfg: Any, model: Any, total_steps: int, new_token_ids: list[int]) -> tuple[type, dict]:
        import peft

        args = {"num_virtual_tokens": cfg.num_virtual_tokens, "prefix_projection": cfg.prefix_projection}
        if cfg.encoder_hidden_size:
            args["encoder_hidden_size"] = cfg.encoder_hidden_size
        return peft.PrefixTuningConfig, args

    @classmethod
    def check_model(cls, model: Any) -> None:
        if prefix_tuning_fits(model):
            return
        import peft as peft_library
        import transformers

        raise FtuneError(f"prefix tuning cannot drive {type(model).__name__} with transformers "
                         f"{transformers.__version__} and peft {peft_library.__version__} (peft looks for a "
                         "`past_key_values` argument, which transformers 5.24 renamed to `cache`)", where="peft",
                         fix="use peft=lora, ia3 or prompt_tuning with this model; prefix tuning works on causal "
                         "LMs and seq2seq models (task=sft, seq2seq)")


@registry.peft_method("prompt_tuning", PromptTuningConfig)
class PromptTuning(PeftMethod):
    virtual_tokens = True

    @classmethod
    def build(cls, cfg: Any, model: Any, total_steps: int, new_token_ids: list[int]) -> tuple[type, dict]:
        import peft

        args = {"num_virtual_tokens": cfg.num_virtual_tokens}
        if cfg.init == "text":
            if not cfg.init_text:
                raise FtuneError("peft.init=text needs the text", where="peft.init_text",
                                 fix='add peft.init_text="Classify the sentiment:"')
            args.update(prompt_tuning_init="TEXT", prompt_tuning_init_text=cfg.init_text,
                        tokenizer_name_or_path=model.name_or_path)
        return peft.PromptTuningConfig, args

    @classmethod
    def after_wrap(cls, wrapped: Any, model: Any, cfg: Any) -> None:
        if task_type(model) in ("TOKEN_CLS", "QUESTION_ANS"):  # per-token outputs gain leading positions
            drop_virtual_positions(wrapped, cfg.num_virtual_tokens)
