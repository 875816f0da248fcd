"""`ftune <subcommand> [hydra overrides]`: a thin dispatcher over one Hydra app per subcommand.

Hydra has no subcommands, so argv[1] picks the primary config (configs/<sub>.yaml) and the rest goes to
Hydra untouched. Before handing over, the overrides are composed once in-process so that a typo or a wrong
type becomes one clear line and exit code 2 instead of Hydra's multi-line report. No torch import here:
`ftune --help` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys

from ftune import __version__
from ftune.errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CheckFailed,
    FtuneError,
    Interrupted,
    did_you_mean,
    report,
)

COMMANDS = {
    "train": "fine-tune a model; writes a run directory (config, logs, metrics, checkpoints, best/)",
    "eval": "evaluate a run (run_dir=...) or a model folder (model=... task=...) on a split or file",
    "predict": "predict on text lines or JSONL from a file or stdin; writes JSONL",
    "export": "a run's model as a standalone folder (out=...): format=hf (merge=true folds PEFT in), onnx, gguf",
    "chat": "talk to a task=sft run (run_dir=...): one message per stdin line, streamed replies",
    "serve": "an HTTP server for a run or an exported model: /predict, OpenAI-style /v1/* for sft/seq2seq",
    "data": "`data check task=...`: validate a task's data (no model); `data show`: what trains, highlighted",
    "report": "draw a run's (run_dir=...) or a sweep's (sweep_dir=...) curves into a self-contained report.html",
    "push": "upload a run's best/ (run_dir=...) or an export folder (folder=...) with its card to the hub (repo_id=...)",
}

USAGE = f"""usage: ftune <command> [hydra overrides...]

Fine-tune pretrained transformers with Hydra configs (ftune {__version__}).

commands:
{chr(10).join(f"  {name:<9}{text}" for name, text in COMMANDS.items())}

examples:
  ftune train                                   # MiniLM on the shipped NER demo data
  ftune train task=ner model=minilm task.data.train=train.txt task.data.validation=dev.txt
  ftune train -m optimizer.lr=1e-5,3e-5         # sweep: one run directory per job
  ftune train --cfg job                         # print the composed config
  ftune eval run_dir=runs/ner/minilm/<time> split=test
  ftune eval run_dir=runs/ner/minilm/<time> check='f1>=0.85' output_format=json   # CI gate
  cat texts.txt | ftune predict run_dir=runs/ner/minilm/<time>
  ftune export run_dir=runs/ner/minilm/<time> merge=true out=exported   # PEFT adapter → plain model
  printf "hi\\n" | ftune chat run_dir=runs/sft/smollm2-135m/<time>    # streamed replies; EOF ends
  ftune serve run_dir=runs/ner/minilm/<time> port=8000   # then: curl -d @request.json localhost:8000/predict
  ftune data check task=ner task.data.train=train.txt   # validate data only
  ftune data show task=sft model=smollm2-135m task.data.train=chat.jsonl   # trained tokens highlighted
  ftune train logger.backends=[tensorboard,mlflow]      # trackers (also wandb); docs/tracking.md
  ftune report sweep_dir=multirun/<time>        # a sweep's trials compared in report.html
  ftune push run_dir=runs/ner/minilm/<time> repo_id=me/ner-minilm   # best/ + model card, private

`ftune <command> --help` lists config groups and options. Set FTUNE_DEBUG=1 for tracebacks.
exit codes: 0 ok, 1 a metric gate failed (eval check='f1>=0.85'), 2 bad config or data,
130/143 stopped by SIGINT/SIGTERM (checkpoint saved; continue with resume=true).
CI: output_format=json prints results as one JSON document on stdout (everything else on stderr);
no colours or progress redraws when the output is not a terminal or NO_COLOR is set."""

_HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else EXIT_USAGE)
    if argv[0] in ("-V", "--version"):
        print(f"ftune {__version__}")
        sys.exit(0)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        hint = did_you_mean(command, COMMANDS) or f"choose from {', '.join(COMMANDS)}"
        sys.exit(report(FtuneError(f"unknown command `{command}`", fix=hint)))

    if command == "data":
        if not rest or rest[0] not in ("check", "show"):
            sys.exit(report(FtuneError("`ftune data` needs a subcommand",
                                       fix="use: ftune data check task=..., or ftune data show task=sft model=...")))
        rest = [f"action={rest[0]}", *rest[1:]]
    from ftune.config import register_configs

    register_configs()
    import warnings

    # configs/hydra/launcher/ray.yaml shares its name with the Ray plugin's schema, which Hydra then checks
    # it against (as wanted) while warning that the practice is deprecated
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")
    if command in ("eval", "predict", "chat", "serve"):
        # `model` is a config group for train; here it names a model folder (eval.yaml: model_dir)
        rest = [f"model_dir={arg[6:]}" if arg.startswith("model=") else arg for arg in rest]
    if command in ("eval", "predict", "chat", "serve", "export"):
        # a run's saved task settings are the base; `task.<key>=v` changes one key of them (ftune/inference.py)
        rest = [f"++{arg}" if arg.startswith("task.") else arg for arg in rest]
    if command in ("eval", "predict", "chat"):
        # check='f1>=0.85' reaches us as check=f1>=0.85, which Hydra's grammar cannot read: quote it
        rest = [_quoted(arg) if arg.startswith("check=") and arg[6:7] not in ("'", '"', "[") else arg for arg in rest]
    try:
        if not any(arg.split("=")[0] in _HYDRA_INFO_FLAGS for arg in rest):
            _preflight(command, rest)
            if command == "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                from ftune.distributed import shared_output_dirs

                rest = shared_output_dirs(rest)
    except FtuneError as error:
        sys.exit(report(error))

    sys.argv = [f"ftune {command}", *rest]
    try:
        _hydra_app(command)()
    except KeyboardInterrupt:
        print("ftune: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    from ftune import sweep

    if sweep.failed:  # reported one line each and in the summary; the exit code says so too
        print(f"ftune: {len(sweep.failed)} job(s) failed: {', '.join(f'#{n}' for n in sweep.failed)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _quoted(arg: str) -> str:
    key, _, value = arg.partition("=")
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hydra_app(command: str):
    import hydra

    @hydra.main(version_base="1.3", config_path="pkg://ftune.configs", config_name=command)
    def app(cfg):
        return run_command(command, cfg)

    return app


def run_command(command: str, cfg):
    """Run `ftune.commands.<command>.run(cfg)` inside a Hydra job, mapping user errors to exit 2.

    In a multirun a failing job never stops the sweep: it returns {"error": ...}, which the sweep summary
    (ftune.sweep) reports and which the Optuna sweeper counts as a failed trial. Under Optuna the job
    returns the main validation metric, the objective.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    _quiet_libraries()
    module = importlib.import_module(f"ftune.commands.{command}")
    try:
        result = module.run(cfg)
    except Interrupted as stopped:
        print(f"ftune: {stopped}", file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code)
    except CheckFailed as missed:
        print(f"ftune: {missed}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CHECK_FAILED)
    except FtuneError as error:
        code = report(error)
        if not multirun:
            sys.exit(code)
        return {"error": error.one_line()}
    except Exception as error:  # a bug in one job: its log holds the traceback, the other jobs go on
        if not multirun:
            raise
        import logging

        logging.getLogger("ftune").exception("job %s failed", HydraConfig.get().job.num)
        print(f"ftune: error: job {HydraConfig.get().job.num}: {type(error).__name__}: {error}", file=sys.stderr)
        return {"error": f"{type(error).__name__}: {error}"}
    if multirun and "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")):
        return result.get("optimized_metric")
    return result


def _quiet_libraries() -> None:
    """transformers' per-file progress bars and init warnings drown ftune's own output."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # peft's save_pretrained asks transformers a deprecated question on every checkpoint
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def _preflight(command: str, args: list[str]) -> None:
    """Compose the config in-process and turn composition errors into one FtuneError line."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from ftune.config import check_known_keys, check_values

    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") and not f.startswith("--cfg") and f not in ("-p", "--package")
           for f in flags):
        return  # unusual Hydra flags (--config-dir, ...): let Hydra handle everything
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
    with initialize_config_module("ftune.configs", version_base="1.3"):
        for variant in variants[:50]:
            try:
                cfg = compose(command, overrides=variant)
            except Exception as error:  # Hydra and OmegaConf raise many types; all mean "bad config"
                raise _explain(error, command, variant, compose) from error
            check_values(cfg)  # first: an unknown plug-in name is the error, not the keys its schema lacks
            check_known_keys(cfg)
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise FtuneError(f"`{missing[0]}` is required", where=missing[0],
                                 fix=f"add {missing[0]}=<value> (see `ftune {command} --help`)")


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
