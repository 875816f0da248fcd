"""`ftune <subcommand> [hydra overrides]`: a thin dispatcher over one Hydra app per subcommand.

Hydra has no subcommands, so argv[1] picks the primary config (configs/<sub>.yaml) and the rest goes to
Hydra (after the rewrites and the in-process composition check of ftune.config.preflight, which turn a typo
or a wrong type into one line and exit code 2). A multirun job's failures and Optuna's objective are
ftune.sweep's. No torch import here: `ftune --help` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

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
    "explain": "token attributions of a run's predictions (explain.method=...), an HTML page, faithfulness",
    "stress": "a run's metric on its evaluation split under seeded perturbations (typos, case, entity swaps)",
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
  echo "a gripping film" | ftune explain run_dir=<run> explain.html=why.html   # attributions (captum)
  ftune stress run_dir=<run>                    # the metric under typos, case, punctuation, entity swaps
  ftune push run_dir=runs/ner/minilm/<time> repo_id=me/ner-minilm   # best/ + model card, private

`ftune <command> --help` lists config groups and options. Set FTUNE_DEBUG=1 for tracebacks.
exit codes: 0 ok, 1 a metric gate failed (eval check='f1>=0.85'), 2 bad config or data,
130/143 stopped by SIGINT/SIGTERM (checkpoint saved; continue with resume=true).
CI: output_format=json prints results as one JSON document on stdout (everything else on stderr);
no colours or progress redraws when the output is not a terminal or NO_COLOR is set."""


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

    from ftune.config.preflight import UNCHECKED, asks_hydra_info, hydra_args, mode_known, preflight
    from ftune.registry import register_configs

    register_configs()
    # configs/hydra/launcher/ray.yaml shares its name with the Ray plugin's schema, which Hydra then checks
    # it against (as wanted) while warning that the practice is deprecated
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")
    mode = UNCHECKED
    try:
        rest = hydra_args(command, rest)
        if not asks_hydra_info(rest):
            mode = preflight(command, rest)
            if command == "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                from ftune.distributed import shared_output_dirs

                rest = shared_output_dirs(rest)
    except FtuneError as error:
        sys.exit(report(error))

    sys.argv = [f"ftune {command}", *rest]
    try:
        with mode_known(mode):
            _hydra_app(command)()
    except KeyboardInterrupt:
        print("ftune: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    from ftune import sweep

    sweep.exit_if_jobs_failed()


def _hydra_app(command: str):
    import hydra

    @hydra.main(version_base="1.3", config_path="pkg://ftune.configs", config_name=command)
    def app(cfg):
        return run_command(command, cfg)

    return app


def run_command(command: str, cfg):
    """Run `ftune.commands.<command>.run(cfg)` inside a Hydra job, mapping user errors to exit 2; in a
    multirun a failing job never stops the sweep (ftune.sweep.job_failed)."""
    from ftune import sweep
    from ftune.commands import quiet_libraries

    multirun = sweep.in_multirun()
    quiet_libraries()
    module = importlib.import_module(f"ftune.commands.{command}")
    try:
        result = module.run(cfg)
    except (Interrupted, CheckFailed) as stopped:
        print(f"ftune: {stopped}", file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code if isinstance(stopped, Interrupted) else EXIT_CHECK_FAILED)
    except Exception as error:
        if multirun:
            return sweep.job_failed(error)
        if isinstance(error, FtuneError):
            sys.exit(report(error))
        raise
    return sweep.job_result(result)
