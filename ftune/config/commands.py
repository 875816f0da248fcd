"""Schemas of the commands' primary configs (configs/<command>.yaml): `train` composes the groups; the others
point at a run directory or a model folder and reuse its saved settings (ftune/inference.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from ftune.config.fields import bounded, choice, empty, section
from ftune.config.groups import DEVICES, PRECISIONS, RecipeConfig

OUTPUT_FORMATS = ("table", "json")  # json: one JSON document on stdout, tables on stderr


@dataclass
class TrainConfig:
    # the groups, each checked against its own schema (ftune/config/groups.py, the task's in registry.TASKS)
    model: Any = MISSING
    task: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    peft: Any = MISSING
    freeze: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    objective: Any = MISSING  # standard | setfit
    continual: Any = MISSING  # configs/continual/: replay, regularisers, adapters per stage, forgetting table
    recipe: RecipeConfig = section(RecipeConfig)
    run_dir: str = MISSING
    resume: Any = False  # false | true (latest checkpoint) | path to a checkpoint folder
    # settings a resume may change, e.g. [optimizer.lr,trainer.max_steps]; any other difference is refused
    resume_allow: list[str] = empty(list)
    overwrite: bool = False  # allow training into a run directory that already holds a run
    # start from an earlier run's weights (its best/; an adapter merged) or a model folder: the body is loaded,
    # the head stays fresh unless the label set matches (ftune/init_from.py)
    init_from: str | None = None
    output_format: str = choice(*OUTPUT_FORMATS)


@dataclass
class EvalConfig:
    run_dir: str | None = None  # a training run; its saved config.yaml is reused
    model_dir: str | None = None  # or any Hugging Face model folder (then `task=` is required); CLI: model=
    task: Any = None
    split: str = choice("validation", "test", "train")
    file: str | None = None  # evaluate this data file instead of a configured split
    checkpoint: str = MISSING  # best | last | <path to a checkpoint or model folder>
    adapter: str | None = None  # a run's adapter by name (<run_dir>/adapters/<name>/, continual learning)
    batch_size: int | None = bounded(None, ge=1)  # default: the run's trainer.eval_batch_size (the trainer YAML's for a folder)
    precision: str | None = choice(None, *PRECISIONS, default=None)  # default: the run's trainer.precision
    device: str = choice(*DEVICES)
    check: Any = None  # metric gate for CI, e.g. 'f1>=0.85' or 'f1>=0.85,loss<=0.5': exit 1 when missed
    output_format: str = choice(*OUTPUT_FORMATS)
    prompt: Any = None  # prompt=zero_shot|few_shot: score a causal LM by prompting it (ftune/prompted/)


@dataclass
class ChatConfig:
    run_dir: str | None = None  # a training run of task=sft
    model_dir: str | None = None  # or any causal-LM folder with a chat template; CLI: model=
    task: Any = None
    model_task: str = MISSING  # the task a plain model folder (model=...) is chatted as
    checkpoint: str = MISSING
    system_prompt: str | None = None
    max_new_tokens: int | None = bounded(None, ge=1)  # default: the run's task.generation.max_new_tokens
    device: str = choice(*DEVICES)
    precision: str | None = choice(None, *PRECISIONS, default=None)  # unused: replies are generated in fp32 (streaming); kept for one loader


@dataclass
class DataCheckConfig:
    task: Any = None
    action: str = choice("check", "show")  # set by `ftune data check|show`
    model: Any = None  # show: the tokenizer (and chat template) of this model preset, e.g. model=smollm2-135m
    split: str = choice("train", "validation", "test")  # show: the split to render
    n: int = bounded(ge=0)  # show: examples printed (the token counts cover the whole split)


@dataclass
class PredictConfig:
    run_dir: str | None = None
    model_dir: str | None = None
    task: Any = None
    checkpoint: str = MISSING
    adapter: str | None = None  # a run's adapter by name (<run_dir>/adapters/<name>/, continual learning)
    input: str = MISSING  # file of text lines or JSONL, or - for stdin
    output: str = MISSING  # JSONL file, or - for stdout
    batch_size: int | None = bounded(None, ge=1)  # default: the run's trainer.eval_batch_size (the trainer YAML's for a folder)
    precision: str | None = choice(None, *PRECISIONS, default=None)  # default: the run's trainer.precision
    device: str = choice(*DEVICES)
    runtime: str = choice("torch", "onnx")  # onnx: model=<folder written by export format=onnx>


@dataclass
class ServeConfig:
    run_dir: str | None = None  # a training run, or:
    model_dir: str | None = None  # a model folder (an export; CLI: model=), with task= unless it has ftune.json
    task: Any = None
    checkpoint: str = MISSING
    adapter: str | None = None  # a run's adapter by name (<run_dir>/adapters/<name>/, continual learning)
    host: str = MISSING  # loopback only unless told otherwise (host=0.0.0.0 listens on every interface)
    port: int = bounded(ge=1, le=65535)
    api_key: str | None = None  # or $FTUNE_API_KEY; requests then need `Authorization: Bearer <key>`
    runtime: str = choice("torch", "onnx")
    device: str = choice(*DEVICES)
    precision: str | None = choice(None, *PRECISIONS, default=None)  # default: the run's trainer.precision
    batch_size: int | None = bounded(None, ge=1)  # most inputs per model pass; default: the run's trainer.eval_batch_size
    batch_window_ms: float = bounded(ge=0)  # under load, how long a batch waits for more requests to join
    max_queue: int = bounded(ge=1)  # inputs waiting for the model; more get 503 with Retry-After
    threads: int | None = bounded(None, ge=1)  # torch's threads for the model; default: the cores less one
    workers: int = bounded(ge=1)  # server processes on the port, each with its own model (ftune/serve/workers.py)
    max_body_bytes: int = bounded(ge=1)  # larger request bodies get 413
    max_inputs: int = bounded(ge=1)  # inputs per request; more get 413
    max_input_chars: int = bounded(ge=1)  # characters per input; longer inputs get 413
    max_new_tokens: int = bounded(ge=1)  # generative runs: the most a request may ask for
    generation_batch: int = bounded(ge=1)  # generative runs: the most replies decoded together (a static batch)
    log_requests: bool = False  # uvicorn's access log


@dataclass
class ExportConfig:
    run_dir: str = MISSING  # a training run
    out: str = MISSING  # folder to write (must not exist, unless overwrite=true)
    checkpoint: str = MISSING  # best | last | <path to a checkpoint folder>
    merge: bool = False  # PEFT runs: fold the adapter into the base weights (a plain transformers model)
    check: bool = MISSING  # compare the exported model's outputs with the run's on validation examples
    overwrite: bool = False
    format: str = choice("hf", "onnx", "gguf")  # hf: a transformers folder; onnx: encoder tasks; gguf: Llama-family LMs
    task: Any = None  # task.<key>=... changes a saved task setting (e.g. the examples checked), with a warning
    tolerance: float | None = bounded(None, gt=0)  # max |output difference| accepted by the check; default per format
    opset: int = bounded(ge=14)  # ONNX opset
    gguf_dtype: str = choice("f32", "f16")  # type of the GGUF file's matrices (norms stay f32)


EXPLAIN_METHODS = ("integrated_gradients", "gradient_x_input", "smooth_grad", "attention")  # ftune explain, report


@dataclass
class ReportConfig:
    run_dir: str | None = None  # a training run: report.html and report/*.png in it
    sweep_dir: str | None = None  # or a multirun folder (with summary.json): the trials compared
    out: str | None = None  # another HTML file to write (default: <run_dir or sweep_dir>/report.html)
    # sweeps over task.data.max_train: prompted evaluations' eval_<split>.json files drawn as horizontal lines
    # on the learning curve (default: the prompted eval_*.json files in sweep_dir)
    baselines: list[str] = empty(list)
    explain: int = bounded(ge=0)  # run_dir: explain this many validation examples (most confident errors first)
    explain_method: str = choice(*EXPLAIN_METHODS)  # their attribution method
    device: str = choice(*DEVICES)  # where explain=N runs the model


@dataclass
class PushConfig:
    run_dir: str | None = None  # a training run: its best/ folder (with the model card) is uploaded
    folder: str | None = None  # or an `ftune export` folder
    repo_id: str = MISSING  # <user or org>/<name> on the Hugging Face hub
    private: bool = MISSING
    revision: str | None = None  # a branch; null: main
    commit_message: str | None = None
    dry_run: bool = False  # list what would be uploaded; nothing is sent


COMMANDS: dict[str, type] = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig,
                             "data": DataCheckConfig, "export": ExportConfig, "chat": ChatConfig,
                             "serve": ServeConfig, "report": ReportConfig, "push": PushConfig}


# ---- ftune explain / ftune stress (ftune/explain/) -----------------------------------------------------------


@dataclass
class ExplainSettings:
    method: str = choice(*EXPLAIN_METHODS)
    steps: int = bounded(ge=2)  # integrated gradients: points on the path from the baseline
    baseline: str = choice("pad", "mask", "unk", "zero")  # the token (or zeros) the baseline puts in place of each input token
    samples: int = bounded(ge=1)  # smooth_grad: noisy copies averaged
    noise: float = bounded(ge=0)  # smooth_grad: noise std, as a share of the input embeddings' std
    target: str | None = None  # explain this label (NER: this entity type) instead of the predicted one
    html: str | None = None  # also write a self-contained HTML page of the explanations here
    faithfulness: bool = False  # measure comprehensiveness/sufficiency on `split` instead of explaining input
    split: str = choice("validation", "test", "train")  # faithfulness: the split
    max_examples: int | None = bounded(None, ge=1)  # faithfulness: its first N examples (null: all)
    seed: int = 0  # faithfulness: the random ranking compared with
    internal_batch_size: int = bounded(ge=1)  # integrated gradients / smooth_grad: path points per model pass


@dataclass
class ExplainConfig:
    run_dir: str | None = None
    model_dir: str | None = None
    task: Any = None
    checkpoint: str = MISSING
    input: str = MISSING  # file of text lines or JSONL, or - for stdin (as predict reads them)
    output: str = MISSING  # JSONL file, or - for stdout (faithfulness: the JSON's path; default in the run)
    device: str = choice(*DEVICES)
    explain: ExplainSettings = section(ExplainSettings)


@dataclass
class StressSettings:
    # the perturbations run (a name each; typos at each rate of `typo_rates`)
    perturbations: list[str] = empty(list)
    typo_rates: list[float] = empty(list)  # share of words given one character typo
    seeds: list[int] = empty(list)  # each perturbation is drawn once per seed; the table shows their mean
    substitutions: dict[str, str] = empty(dict)  # classification invariants: word → word that must not matter
    max_examples: int | None = bounded(None, ge=1)  # the first N examples of the split (null: all)
    # after the suite, AllenNLP's input reduction attack (null: none): tokens dropped while the prediction holds
    attack: str | None = choice(None, "input_reduction", default=None)
    attack_method: str = choice(*EXPLAIN_METHODS)  # the attribution that ranks the tokens to drop


@dataclass
class StressConfig:
    run_dir: str | None = None  # a training run (stress_<split>.json is written into it)
    checkpoint: str = MISSING
    split: str = choice("validation", "test")
    batch_size: int | None = bounded(None, ge=1)
    precision: str | None = choice(None, *PRECISIONS, default=None)
    device: str = choice(*DEVICES)
    task: Any = None
    stress: StressSettings = section(StressSettings)
    output_format: str = choice(*OUTPUT_FORMATS)


COMMANDS.update(explain=ExplainConfig, stress=StressConfig)
