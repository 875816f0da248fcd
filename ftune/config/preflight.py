"""What happens to a command's arguments before Hydra sees them: the rewrites that let users type what they
mean (`model=<folder>` for eval, `check=f1>=0.85` unquoted, `data check`), and one in-process composition of
every value of every sweep, so that a typo or a wrong type becomes one line and exit 2 instead of Hydra's
multi-line report, before any job, data or weight loads."""

from __future__ import annotations

import contextlib
from typing import Any

from ftune.errors import FtuneError, did_you_mean

UNCHECKED = "unchecked"  # preflight's answer when it composed nothing
ComposedMode = Any  # hydra.types.RunMode | None | UNCHECKED (hydra is imported lazily)

# Hydra answers these itself (help, config search path, completion): nothing to compose or check
HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def hydra_args(command: str, args: list[str]) -> list[str]:
    """`args` as the Hydra app of `command` reads them."""
    if command == "data":
        if not args or args[0] not in ("check", "show"):
            raise FtuneError("`ftune data` needs a subcommand",
                             fix="use: ftune data check task=..., or ftune data show task=sft model=...")
        args = [f"action={args[0]}", *args[1:]]
    if command in ("eval", "predict", "chat", "serve", "explain"):
        # `model` is a config group for train; here it names a model folder (eval.yaml: model_dir)
        args = [f"model_dir={arg[6:]}" if arg.startswith("model=") else arg for arg in args]
    if command in ("eval", "predict", "chat", "serve", "export", "explain", "stress"):
        # a run's saved task settings are the base; `task.<key>=v` changes one key of them (ftune/inference.py)
        args = [f"++{arg}" if arg.startswith("task.") else arg for arg in args]
    if command in ("eval", "predict", "chat"):
        # check='f1>=0.85' reaches us as check=f1>=0.85, which Hydra's grammar cannot read: quote it
        args = [_quoted(arg) if arg.startswith("check=") and arg[6:7] not in ("'", '"', "[") else arg for arg in args]
    return args


def asks_hydra_info(args: list[str]) -> bool:
    return any(arg.split("=")[0] in HYDRA_INFO_FLAGS for arg in args)


def _quoted(arg: str) -> str:
    key, _, value = arg.partition("=")
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def preflight(command: str, args: list[str]) -> ComposedMode:
    """Compose the config in-process and turn composition errors into one FtuneError line; return the
    composed `hydra.mode` (None when unset; UNCHECKED when unusual Hydra flags skipped the check).

    Needs the schemas registered (ftune.config.register_configs)."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict

    from ftune.config.checks import check_known_keys, check_values

    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") and not f.startswith("--cfg") and f not in ("-p", "--package")
           for f in flags):
        return UNCHECKED  # unusual Hydra flags (--config-dir, ...): let Hydra handle everything
    overrides = [a for a in args if not a.startswith("-") and a not in ("job", "hydra", "all")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise FtuneError(f"cannot parse overrides: {str(error).splitlines()[0]}",
                         fix="use key=value, e.g. trainer.epochs=3") from error
    # Every value of every sweep is checked once, the other sweeps held at their first value.
    first = [_with_value(o, _values(o)[0]) for o in parsed]
    variants = [first] + [first[:i] + [_with_value(o, v)] + first[i + 1:]
                          for i, o in enumerate(parsed) for v in _values(o)[1:]]
    mode = None
    with initialize_config_module("ftune.configs", version_base="1.3"):
        for index, variant in enumerate(variants[:50]):
            try:
                cfg = compose(command, overrides=variant, return_hydra_config=index == 0)
            except Exception as error:  # Hydra and OmegaConf raise many types; all mean "bad config"
                raise _explain(error, command, variant, compose) from error
            if index == 0:  # what Hydra.get_mode would compose the whole config once more to read
                mode = cfg.hydra.mode
                with open_dict(cfg):
                    del cfg["hydra"]
            check_values(cfg)  # first: an unknown plug-in name is the error, not the keys its schema lacks
            check_known_keys(cfg)
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise FtuneError(f"`{missing[0]}` is required", where=missing[0],
                                 fix=f"add {missing[0]}=<value> (see `ftune {command} --help`)")
    return mode


@contextlib.contextmanager
def mode_known(mode: ComposedMode):
    """Inside this block Hydra takes `hydra.mode` as preflight() composed it. Before a run Hydra composes the
    whole config once more only to read that key (Hydra.get_mode, about 0.2 s a call)."""
    if mode == UNCHECKED:
        yield
        return
    from hydra._internal.hydra import Hydra

    composing = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: mode
    try:
        yield
    finally:
        Hydra.get_mode = composing


def _values(override) -> list[str]:
    from hydra.errors import HydraException

    if override.is_sweep_override():
        try:
            return list(override.sweep_string_iterator())
        except HydraException:  # interval(a, b) for Optuna: not enumerable; its lower end stands for it
            return [str(override.value().start)]
    if override.value() is None:  # `~key` deletes; `key=null` sets null and must stay null
        return [""] if override.is_delete() else ["null"]
    return [override.get_value_element_as_str()]


def _with_value(override, value: str) -> str:
    key = override.get_key_element()
    return key if override.is_delete() and not value else f"{key}={value}"


def _explain(error: Exception, command: str, overrides: list[str], compose) -> FtuneError:
    """Hydra's or OmegaConf's composition error as one line: the unknown option or key with the allowed ones."""
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = error
    while not isinstance(cause, ConfigKeyError | ConfigAttributeError | ValidationError):
        if (cause.__cause__ or cause.__context__) is None:
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, MissingConfigException) and error.options is not None:
        group = (error.missing_cfg_file or "").split("/")[0] or "config"
        name = (error.missing_cfg_file or "").split("/")[-1]
        options = sorted(o for o in error.options if not o.startswith("base_"))
        hint = did_you_mean(name, options)
        return FtuneError(f"unknown {group} `{name}`", where=f"{group}={name}",
                          fix=f"{hint + ' ' if hint else ''}choose from: {', '.join(options)}")
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and full_key:
        parent, _, key = full_key.rpartition(".")
        others = [o for o in overrides if not o.lstrip("+~").split("=")[0].startswith(full_key)]
        try:
            node = compose(command, overrides=others)
            node = OmegaConf.select(node, parent) if parent else node
            allowed = sorted(node.keys()) if node is not None and OmegaConf.is_dict(node) else []
        except Exception:
            allowed = []
        hint = did_you_mean(key, allowed)
        prefix = f"{parent}." if parent else ""
        hint = hint.replace("`", f"`{prefix}", 1) if hint else ""
        fix = f"{hint + ' ' if hint else ''}allowed keys: {', '.join(allowed)}" if allowed else None
        return FtuneError(f"unknown config key `{full_key}`", fix=fix)
    if isinstance(cause, ValidationError) and full_key:
        message = str(cause).splitlines()[0]
        return FtuneError(message, where=full_key, fix="check the value's type in the config schema")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return FtuneError(" ".join(lines[:2]) or type(error).__name__, where=f"ftune {command}")
