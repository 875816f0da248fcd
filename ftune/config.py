"""Structured-config schemas, one dataclass per config group, registered in Hydra's ConfigStore.

Every group YAML starts with `defaults: [base_<group>]`, so a misspelled key or a wrong type fails at
composition time, naming the key. Defaults live in the YAML files; the dataclasses say what may be set.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ftune.errors import FtuneError, did_you_mean


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None):
    """A numeric field with its meaningful range; `check_values` refuses a value outside it (null passes)."""
    return field(default=default, metadata={"range": {"ge": ge, "gt": gt, "le": le, "lt": lt}})


def choice(default: Any, *options: Any):
    """A field whose value must be one of `default` and `options` (a MISSING default is not an option)."""
    allowed = tuple(dict.fromkeys(o for o in (default, *options) if o is not MISSING))
    return field(default=default, metadata={"choices": allowed})


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run directories, e.g. "minilm"
    # Hub id ("bert-base-cased"), local folder, or "pkg:<python package>/<folder>" for weights
    # shipped inside an installed package (works offline).
    name_or_path: str = MISSING
    revision: str | None = None
    hub_id: str | None = None  # the hub id of a model shipped in a package: `base_model` of model cards
    trust_remote_code: bool = False  # run Python code shipped with a hub model: only for models you trust
    allow_pickle: bool = False  # load pickle weights (pytorch_model.bin), which can run code when loaded
    quantization: str | None = choice(None, None, "nf4", "int8")  # frozen base in 4/8 bits (bitsandbytes): QLoRA


@dataclass
class DataSourceConfig:
    """Where a task's examples come from (ftune/data/sources.py); each task's data config extends it."""

    hub: str | None = None  # Hugging Face dataset name, e.g. "conll2003", "glue", "squad"
    hub_config: str | None = None  # e.g. "sst2"
    hub_splits: dict[str, str] = field(default_factory=dict)  # e.g. {validation: validation_matched}
    # Local files win over `hub` when any is set.
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    # first N examples of a split (quick experiments, benchmarks)
    max_train: int | None = bounded(None, ge=1)
    max_validation: int | None = bounded(None, ge=1)
    max_test: int | None = bounded(None, ge=1)


@dataclass
class NerDataConfig(DataSourceConfig):
    """Files: CoNLL columns or JSONL {"tokens", "tags"}."""

    format: str = choice("auto", "conll", "jsonl")
    token_column: int = 0
    tag_column: int = -1
    tokens_field: str = "tokens"
    tags_field: str = "tags"


@dataclass
class NerTaskConfig:
    name: str = "ner"
    data: NerDataConfig = field(default_factory=NerDataConfig)
    scheme: str = choice("auto", "IOB1", "IOB2", "BIOES")
    max_length: int = bounded(128, ge=8)  # sub-word tokens per window, special tokens included
    stride: int = bounded(16, ge=0)  # context tokens kept on each side when a sentence is split into windows
    label_all_tokens: bool = False  # train on every sub-token (metrics still use the first one)


@dataclass
class QaDataConfig(DataSourceConfig):
    """Files: SQuAD JSON ({"data": [...]}) or JSONL {"question", "context", "answers"}."""


@dataclass
class QaTaskConfig:
    name: str = "qa"
    data: QaDataConfig = field(default_factory=QaDataConfig)
    max_length: int = bounded(384, ge=16)  # tokens per window (question + context + special tokens)
    doc_stride: int = bounded(128, ge=0)  # tokens shared by consecutive windows of a long context
    n_best: int = bounded(20, ge=1)  # start and end candidates kept per window
    max_answer_length: int = bounded(30, ge=1)  # tokens
    version_2: Any = "auto"  # auto | true | false: questions may have no answer (SQuAD v2)
    null_threshold: float = 0.0  # v2: predict "" when null score - best span score > this


@dataclass
class ClassificationDataConfig(DataSourceConfig):
    """Data of the sequence-level tasks (classification, pair_classification, regression, multilabel).
    Files: CSV, TSV (with a header line) or JSONL."""

    format: str = choice("auto", "csv", "tsv", "jsonl")  # auto: from the extension
    text_column: str = "text"
    text_pair_column: str | None = None  # set for sentence pairs: the two texts are tokenised as a pair
    label_column: str = "label"


@dataclass
class ClassificationTaskConfig:
    name: str = "classification"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    max_length: int = bounded(128, ge=4)  # sub-word tokens, special tokens included; longer inputs are truncated (and counted)
    class_weights: str | None = choice(None, None, "auto")  # auto: inverse class frequency in train, in the training loss


@dataclass
class PairClassificationTaskConfig(ClassificationTaskConfig):
    name: str = "pair_classification"
    positive_label: str | None = None  # class of `positive_f1`; default: the second label of a binary task


@dataclass
class RegressionTaskConfig:
    name: str = "regression"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    max_length: int = bounded(128, ge=4)


@dataclass
class MultilabelTaskConfig:
    name: str = "multilabel"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    max_length: int = bounded(128, ge=4)
    label_delimiter: str = ","  # splits a label cell such as "sports,politics" (a JSON list is read as such)
    threshold: float = bounded(0.5, gt=0, lt=1)  # a label is predicted when its sigmoid probability is at least this


@dataclass
class RelationDataConfig(DataSourceConfig):
    """JSONL: {"text", "head": [start, end), "tail": [start, end), "label"} (character offsets), or
    {"tokens", "head", "tail", "label"} with token indices."""

    format: str = "jsonl"
    text_column: str = "text"
    label_column: str = "label"
    head_field: str = "head"
    tail_field: str = "tail"


@dataclass
class RelationTaskConfig:
    name: str = "relation"
    data: RelationDataConfig = field(default_factory=RelationDataConfig)
    max_length: int = bounded(128, ge=8)  # longer sentences are cropped around their two entities
    class_weights: str | None = choice(None, None, "auto")
    no_relation: str | None = "no_relation"  # left out of the micro P/R/F1 (null: count every label)


@dataclass
class GenerationConfig:
    """`generate` settings of the generative tasks (evaluation, predict, chat)."""

    max_new_tokens: int = bounded(64, ge=1)
    num_beams: int = bounded(1, ge=1)
    length_penalty: float = 1.0  # beam search only: > 1 favours longer outputs
    do_sample: bool = False  # false: greedy / beam search, reproducible
    temperature: float = bounded(1.0, gt=0)  # sampling only
    top_p: float = bounded(1.0, gt=0, le=1)  # sampling only
    repetition_penalty: float = bounded(1.0, gt=0)


@dataclass
class Seq2seqDataConfig(DataSourceConfig):
    """Files: JSONL, CSV or TSV with a source and a target column (dotted names reach into nested fields,
    e.g. `translation.de` in WMT hub datasets)."""

    format: str = choice("auto", "csv", "tsv", "jsonl")  # auto: from the extension
    source_column: str = "source"
    target_column: str = "target"


@dataclass
class Seq2seqTaskConfig:
    name: str = "seq2seq"
    data: Seq2seqDataConfig = field(default_factory=Seq2seqDataConfig)
    prefix: str = ""  # prepended to every source, e.g. T5's "summarize: "
    max_source_length: int = bounded(512, ge=1)  # tokens; longer sources are truncated (and counted)
    max_target_length: int = bounded(128, ge=1)  # tokens of the training targets
    metrics: str = choice("rouge", "rouge", "bleu")  # rouge (ROUGE-1/2/L, selects on rougeL) | bleu (BLEU + chrF, selects on bleu)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class SftDataConfig(DataSourceConfig):
    """JSONL, one example per line, in any of the formats of ftune/tasks/chat_data.py."""

    format: str = choice("auto", "messages", "alpaca", "sharegpt", "prompt_response", "text")  # auto: per row, by its keys
    messages_field: str = "messages"
    conversations_field: str = "conversations"  # ShareGPT
    role_map: dict[str, str] = field(default_factory=dict)  # ShareGPT `from` names → roles, over the usual ones
    prompt_field: str = "prompt"
    response_field: str = "response"
    text_field: str = "text"  # format text: continued pre-training, every token trains
    system_prompt: str | None = None  # added as a system message to prompt/response and Alpaca examples


@dataclass
class SftTaskConfig:
    name: str = "sft"
    data: SftDataConfig = field(default_factory=SftDataConfig)
    max_length: int = bounded(1024, ge=8)  # tokens per conversation; longer ones are cut at the end (and counted)
    chat_template: str | None = None  # Jinja template used when the tokenizer has none (null: a ChatML-like one)
    packing: bool = False  # pack a batch's conversations into rows of max_length (attention kept per conversation)
    eval_generate: bool = False  # also generate the last assistant turn at evaluation: exact_match, token_f1, rougeL
    train_on: str = choice("all_turns", "last_turn")  # last_turn: for templates that do not render turn by turn
    neftune_alpha: float | None = bounded(None, gt=0)  # NEFTune: noise on the input embeddings in training (the paper: 5)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class DpoDataConfig(SftDataConfig):
    """JSONL: a prompt in any chat format of sft (`prompt`, `messages`, Alpaca, ShareGPT) + `chosen` and
    `rejected` replies (strings, or lists holding one assistant message)."""

    chosen_field: str = "chosen"
    rejected_field: str = "rejected"


@dataclass
class DpoTaskConfig:
    name: str = "dpo"
    data: DpoDataConfig = field(default_factory=DpoDataConfig)
    loss: str = choice("sigmoid", "ipo", "orpo", "simpo")  # sigmoid = DPO; orpo and simpo need no reference model
    beta: float | None = bounded(None, gt=0)  # null: the method's usual value (sigmoid, ipo, orpo: 0.1; simpo: 2.0)
    label_smoothing: float = bounded(0.0, ge=0, lt=0.5)  # sigmoid: conservative DPO (probability of flipped labels)
    simpo_gamma: float = 0.5  # simpo: the target reward margin γ
    select: str = choice("loss", "reward_accuracy")  # what selects best/ (validation preference loss by default)
    reference_model: str | None = None  # full fine-tuning: the reference (the YAML default: ${model.name_or_path})
    max_length: int = bounded(1024, ge=8)  # tokens per prompt + reply; longer ones are cut at the end (and counted)
    chat_template: str | None = None
    neftune_alpha: float | None = bounded(None, gt=0)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class OptimizerConfig:
    name: str = choice(MISSING, "adamw", "sgd", "adafactor")
    lr: float = bounded(5e-5, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the optimizer class
    # LoRA+ (Hayou et al., 2024): the LoRA B matrices train at lr × this ratio (the paper: 16); null: off
    loraplus_lr_ratio: float | None = bounded(None, gt=0)


@dataclass
class SchedulerConfig:
    name: str = choice(MISSING, "linear", "cosine", "constant")
    warmup_ratio: float = bounded(0.0, ge=0, lt=1)  # fraction of the training steps
    warmup_steps: int = bounded(0, ge=0)  # wins over warmup_ratio when > 0


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning through the peft library (ftune/peft.py). The task head always trains."""

    name: str = "none"  # none | lora | dora | rslora | adalora | ia3 | prefix_tuning | prompt_tuning
    args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the peft config class


@dataclass
class LoraConfig(PeftConfig):
    r: int = bounded(8, ge=1)
    alpha: int = bounded(16, gt=0)
    dropout: float = bounded(0.1, ge=0, lt=1)
    bias: str = choice("none", "none", "all", "lora_only")
    # null: peft's default for the architecture (BERT: query, value); a list of module names; or all-linear
    target_modules: Any = None
    use_dora: bool = False  # DoRA (Liu et al., 2024): LoRA on the direction, a trained magnitude per output
    use_rslora: bool = False  # rsLoRA (Kalajdzievski, 2023): scale alpha/sqrt(r), stable at high ranks


@dataclass
class AdaLoraConfig(LoraConfig):
    """LoRA whose ranks are re-allocated during training (init_r per matrix, shrinking to target_r on average)."""

    init_r: int = bounded(12, ge=1)
    target_r: int = bounded(8, ge=1)
    tinit: float = bounded(0.1, ge=0, lt=1)  # fraction of training steps before ranks start to shrink
    tfinal: float = bounded(0.2, ge=0, lt=1)  # fraction of training steps at the end with ranks fixed
    deltaT: int = bounded(10, ge=1)  # steps between re-allocations


@dataclass
class IA3Config(PeftConfig):
    target_modules: list[str] | None = None  # null: peft's default (BERT: key, value, output.dense)
    feedforward_modules: list[str] | None = None


@dataclass
class PromptLearningConfig(PeftConfig):
    num_virtual_tokens: int = bounded(20, ge=1)


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    prefix_projection: bool = False  # reparameterise the prefix through an MLP (more parameters, steadier)
    encoder_hidden_size: int | None = None  # of that MLP; null: the model's hidden size


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    init: str = choice("random", "random", "text")  # text: initialise the soft prompt from the embeddings of init_text)
    init_text: str | None = None


@dataclass
class FreezeConfig:
    """Partial fine-tuning without PEFT (ftune/freeze.py): which weights keep requires_grad."""

    name: str = "none"
    embeddings: bool = False  # freeze the embedding layer
    bottom_layers: int = bounded(0, ge=0)  # freeze the first N transformer layers
    train_only: str | None = choice(None, None, "head", "bias")  # head: linear probe; bias: BitFit (biases + head)


@dataclass
class TrainerConfig:
    epochs: int = bounded(3, ge=0)
    max_steps: int | None = bounded(None, ge=1)  # optimizer steps; overrides epochs when set
    batch_size: int = bounded(32, ge=1)  # examples per optimizer step on each device, before accumulation
    eval_batch_size: int = bounded(64, ge=1)
    grad_accum: int = bounded(1, ge=1)  # micro-batches per optimizer step; the loss is normalised over all their targets
    precision: str = choice("auto", "auto", "fp32", "bf16", "fp16")
    max_grad_norm: float | None = bounded(1.0, gt=0)
    eval_every: int | None = bounded(None, ge=1)  # optimizer steps between evaluations (always at epoch end)
    save_every: int | None = bounded(None, ge=1)  # optimizer steps between checkpoints (always at epoch end)
    log_every: int = bounded(10, ge=1)
    patience: int | None = bounded(None, ge=1)  # evaluations without improvement before stopping early
    keep_last: int = bounded(2, ge=1)  # checkpoints kept in checkpoints/
    seed: int = 42
    group_by_length: bool = True
    cache_features: bool = True  # keep tokenised features on disk ($FTUNE_CACHE_DIR) for the next run
    featurize_workers: int = bounded(0, ge=0)  # processes that tokenise (0: one per available core); features do not depend on it
    nonfinite: str = choice("stop", "stop", "skip", "ignore")  # NaN/inf loss or gradients: skip the update (counted), or no check
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps
    compile: bool = False  # torch.compile the model (pays off on GPUs; measured no gain on a 2-core CPU)
    num_workers: int = bounded(0, ge=0)
    device: str = choice("auto", "auto", "cpu", "cuda")
    strategy: str = choice("ddp", "ddp", "fsdp")  # several processes: ddp (whole model on each) | fsdp (FSDP2, sharded)


@dataclass
class MlflowLoggerConfig:
    """MLflow (ftune/loggers/mlflow.py). null values fall back to MLflow's environment variables."""

    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)
    experiment: str | None = None  # null: $MLFLOW_EXPERIMENT_NAME, else "ftune"
    run_name: str | None = None  # null: <task>-<model>-<run folder name>


@dataclass
class WandbLoggerConfig:
    """Weights & Biases (ftune/loggers/wandb.py). null values fall back to wandb's WANDB_* variables."""

    project: str | None = None  # null: $WANDB_PROJECT, else "ftune"
    entity: str | None = None  # null: $WANDB_ENTITY, else the account's default
    mode: str | None = None  # online | offline | disabled; null: $WANDB_MODE, else online
    tags: list[str] = field(default_factory=list)  # added to task, model and peft


@dataclass
class LoggerConfig:
    console: str = choice("auto", "auto", "rich", "plain", "none")  # auto: a rich bar on a terminal, plain lines otherwise
    jsonl: bool = True
    backends: list[str] = field(default_factory=list)  # trackers, several at once: tensorboard, mlflow, wandb
    report: bool = True  # report.html and plots in the run directory, and the model card in best/, at the end
    log_best: bool = False  # also upload best/ to the trackers as an artifact (it may be large)
    max_param_length: int = 500  # longer config values are cut (with a note) in tracker params
    mlflow: MlflowLoggerConfig = field(default_factory=MlflowLoggerConfig)
    wandb: WandbLoggerConfig = field(default_factory=WandbLoggerConfig)


@dataclass
class RecipeConfig:
    """A reference recipe (configs/experiment/<name>.yaml sets it): what the run usually reaches.
    ftune/recipes.py checks a finished run against it and records the verdict in results.json."""
    name: str | None = None  # the experiment's name; null: not a reference recipe
    # split -> metric -> [low, high], in the metric's own scale (NER F1 0-1, SQuAD F1 0-100)
    expected: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    source: str = ""  # where the range comes from: "measured here (...)" or a paper
    # split -> data fingerprint (ftune.recipes.fingerprint): a run on the same data and model matches the
    # recipe even without experiment=; empty for hub data, which is matched by name only
    fingerprints: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    task: Any = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    peft: PeftConfig = MISSING
    freeze: FreezeConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    run_dir: str = MISSING
    resume: Any = False  # false | true (latest checkpoint) | path to a checkpoint folder
    # settings a resume may change, e.g. [optimizer.lr,trainer.max_steps]; any other difference is refused
    resume_allow: list[str] = field(default_factory=list)
    overwrite: bool = False  # allow training into a run directory that already holds a run
    output_format: str = choice("table", "table", "json")  # json: results as one JSON document on stdout, tables on stderr


@dataclass
class EvalConfig:
    run_dir: str | None = None  # a training run; its saved config.yaml is reused
    model_dir: str | None = None  # or any Hugging Face model folder (then `task=` is required); CLI: model=
    task: Any = None
    split: str = choice("validation", "validation", "test", "train")
    file: str | None = None  # evaluate this data file instead of a configured split
    checkpoint: str = "best"  # best | last | <path to a checkpoint or model folder>
    batch_size: int | None = bounded(None, ge=1)  # default: the run's trainer.eval_batch_size (64 for a model folder)
    precision: str | None = choice(None, "auto", "fp32", "bf16", "fp16")  # default: the run's trainer.precision
    device: str = choice("auto", "auto", "cpu", "cuda")
    check: Any = None  # metric gate for CI, e.g. 'f1>=0.85' or 'f1>=0.85,loss<=0.5': exit 1 when missed
    output_format: str = choice("table", "table", "json")  # json: metrics as one JSON document on stdout, the table on stderr


@dataclass
class ChatConfig:
    run_dir: str | None = None  # a training run of task=sft
    model_dir: str | None = None  # or any causal-LM folder with a chat template; CLI: model=
    task: Any = None
    checkpoint: str = "best"
    system_prompt: str | None = None
    max_new_tokens: int | None = bounded(None, ge=1)  # default: the run's task.generation.max_new_tokens
    device: str = choice("auto", "auto", "cpu", "cuda")
    precision: str | None = choice(None, "auto", "fp32", "bf16", "fp16")  # unused: replies are generated in fp32 (streaming); kept for one loader


@dataclass
class DataCheckConfig:
    task: Any = MISSING
    action: str = choice("check", "show")  # set by `ftune data check|show`
    model: Any = None  # show: the tokenizer (and chat template) of this model preset, e.g. model=smollm2-135m
    split: str = choice("train", "validation", "test")  # show: the split to render
    n: int = bounded(3, ge=0)  # show: examples printed (the token counts cover the whole split)


@dataclass
class PredictConfig:
    run_dir: str | None = None
    model_dir: str | None = None
    task: Any = None
    checkpoint: str = "best"
    input: str = "-"  # file of text lines or JSONL, or - for stdin
    output: str = "-"  # JSONL file, or - for stdout
    batch_size: int | None = bounded(None, ge=1)  # default: the run's trainer.eval_batch_size (64 for a model folder)
    precision: str | None = choice(None, "auto", "fp32", "bf16", "fp16")  # default: the run's trainer.precision
    device: str = choice("auto", "auto", "cpu", "cuda")
    runtime: str = choice("torch", "torch", "onnx")  # onnx: model=<folder written by export format=onnx>


@dataclass
class ServeConfig:
    run_dir: str | None = None  # a training run, or:
    model_dir: str | None = None  # a model folder (an export; CLI: model=), with task= unless it has ftune.json
    task: Any = None
    checkpoint: str = "best"
    host: str = "127.0.0.1"  # loopback only unless told otherwise (host=0.0.0.0 listens on every interface)
    port: int = bounded(8000, ge=1, le=65535)
    api_key: str | None = None  # or $FTUNE_API_KEY; requests then need `Authorization: Bearer <key>`
    runtime: str = choice("torch", "torch", "onnx")
    device: str = choice("auto", "auto", "cpu", "cuda")
    precision: str | None = choice(None, "auto", "fp32", "bf16", "fp16")  # default: the run's trainer.precision
    batch_size: int | None = bounded(None, ge=1)  # most inputs per model pass; default: the run's trainer.eval_batch_size
    batch_window_ms: float = bounded(5.0, ge=0)  # how long a batch waits for concurrent requests to join; 0: no batching
    max_body_bytes: int = bounded(1_000_000, ge=1)  # larger request bodies get 413
    max_inputs: int = bounded(256, ge=1)  # inputs per request; more get 413
    max_input_chars: int = bounded(100_000, ge=1)  # characters per input; longer inputs get 413
    max_new_tokens: int = bounded(512, ge=1)  # generative runs: the most a request may ask for
    log_requests: bool = False  # uvicorn's access log


@dataclass
class ExportConfig:
    run_dir: str = MISSING  # a training run
    out: str = MISSING  # folder to write (must not exist, unless overwrite=true)
    checkpoint: str = "best"  # best | last | <path to a checkpoint folder>
    merge: bool = False  # PEFT runs: fold the adapter into the base weights (a plain transformers model)
    check: bool = True  # compare the exported model's outputs with the run's on validation examples
    overwrite: bool = False
    format: str = choice("hf", "hf", "onnx", "gguf")  # hf: a transformers folder; onnx: encoder tasks; gguf: Llama-family LMs
    task: Any = None  # task.<key>=... changes a saved task setting (e.g. the examples checked), with a warning
    tolerance: float | None = bounded(None, gt=0)  # max |output difference| accepted by the check; default per format
    opset: int = bounded(18, ge=14)  # ONNX opset
    gguf_dtype: str = choice("f32", "f32", "f16")  # type of the GGUF file's matrices (norms stay f32)


@dataclass
class ReportConfig:
    run_dir: str | None = None  # a training run: report.html and report/*.png in it
    sweep_dir: str | None = None  # or a multirun folder (with summary.json): the trials compared
    out: str | None = None  # another HTML file to write (default: <run_dir or sweep_dir>/report.html)


@dataclass
class PushConfig:
    run_dir: str | None = None  # a training run: its best/ folder (with the model card) is uploaded
    folder: str | None = None  # or an `ftune export` folder
    repo_id: str = MISSING  # <user or org>/<name> on the Hugging Face hub
    private: bool = True
    revision: str | None = None  # a branch; null: main
    commit_message: str | None = None
    dry_run: bool = False  # list what would be uploaded; nothing is sent



PEFT_SCHEMAS: dict[str, type] = {
    "none": PeftConfig,
    "lora": LoraConfig,
    "dora": LoraConfig,
    "rslora": LoraConfig,
    "adalora": AdaLoraConfig,
    "ia3": IA3Config,
    "prefix_tuning": PrefixTuningConfig,
    "prompt_tuning": PromptTuningConfig,
}

GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "peft": PeftConfig,
    "freeze": FreezeConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
}


def register_configs() -> None:
    """Register every schema so that YAML files can extend `base_<group>`."""
    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    cs.store(name="base_eval", node=EvalConfig)
    cs.store(name="base_predict", node=PredictConfig)
    cs.store(name="base_data", node=DataCheckConfig)
    cs.store(name="base_export", node=ExportConfig)
    cs.store(name="base_chat", node=ChatConfig)
    cs.store(name="base_serve", node=ServeConfig)
    cs.store(name="base_report", node=ReportConfig)
    cs.store(name="base_push", node=PushConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)
    for name, schema in _task_schemas().items():
        cs.store(group="task", name=f"base_{name}", node=schema)
    for name, schema in PEFT_SCHEMAS.items():
        if name != "none":
            cs.store(group="peft", name=f"base_{name}", node=schema)
    # hparams_search/*.yaml: Optuna's direction follows the task (maximize F1, minimize a loss-like metric)
    OmegaConf.register_new_resolver("ftune_direction", _direction, replace=True)


def _direction(task_name: str) -> str:
    from ftune.registry import task_class

    return "maximize" if task_class(task_name).greater_is_better else "minimize"


def _task_schemas() -> dict[str, type]:
    from ftune.registry import TASKS  # the one registration of each task: its class and this schema

    return {name: plugin.schema for name, plugin in TASKS.items()}


def check_known_keys(cfg: DictConfig) -> None:
    """Reject keys that no schema declares, e.g. added with `+trainer.epochz=3` (they would do nothing)."""
    schemas = {group: schema for group, schema in GROUP_SCHEMAS.items() if isinstance(cfg.get(group), DictConfig)}
    if isinstance(cfg.get("task"), DictConfig) and cfg.task.get("name") in _task_schemas():
        schemas["task"] = _task_schemas()[cfg.task.name]
    if isinstance(cfg.get("peft"), DictConfig) and cfg.peft.get("name") in PEFT_SCHEMAS:
        schemas["peft"] = PEFT_SCHEMAS[cfg.peft.name]
    top = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig, "data": DataCheckConfig,
           "export": ExportConfig, "chat": ChatConfig, "serve": ServeConfig, "report": ReportConfig, "push": PushConfig}
    for schema in top.values():
        if set(cfg.keys()) <= set(OmegaConf.structured(schema).keys()):
            break
    else:
        schema = TrainConfig
    _compare(cfg, OmegaConf.structured(schema), "", skip=set(schemas))
    for group, group_schema in schemas.items():
        _compare(cfg[group], OmegaConf.structured(group_schema), f"{group}.", skip={"args"})


def check_values(cfg: DictConfig) -> None:
    """Refuse values outside a field's range or choices (`bounded`, `choice`), naming the key: before any
    data or weights load, so `optimizer.lr=-1` is one line and exit 2, not a traceback from torch."""
    for prefix, node, schema in _schema_nodes(cfg):
        _check_fields(node, schema, prefix)


def _schema_nodes(cfg: DictConfig):
    top = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig, "data": DataCheckConfig,
           "export": ExportConfig, "chat": ChatConfig, "serve": ServeConfig}
    keys = set(cfg.keys())
    yield "", cfg, next((s for s in top.values() if keys <= set(OmegaConf.structured(s).keys())), TrainConfig)
    for group, schema in GROUP_SCHEMAS.items():
        if isinstance(cfg.get(group), DictConfig):
            if group == "peft":
                schema = PEFT_SCHEMAS.get(cfg.peft.get("name"), schema)
            yield f"{group}.", cfg[group], schema
    if isinstance(cfg.get("task"), DictConfig) and cfg.task.get("name") in _task_schemas():
        yield "task.", cfg.task, _task_schemas()[cfg.task.name]


def _check_fields(node: DictConfig, schema: type, prefix: str) -> None:
    import dataclasses

    for spec in dataclasses.fields(schema):
        if spec.name not in node or OmegaConf.is_missing(node, spec.name):
            continue
        value = node[spec.name]
        if isinstance(value, DictConfig) and spec.default_factory is not dataclasses.MISSING:
            nested = spec.default_factory()
            if dataclasses.is_dataclass(nested):
                _check_fields(value, type(nested), f"{prefix}{spec.name}.")
            continue
        key = f"{prefix}{spec.name}"
        if "choices" in spec.metadata and value not in spec.metadata["choices"]:
            options = ", ".join("null" if o is None else str(o) for o in spec.metadata["choices"])
            raise FtuneError(f"unknown value `{value}`", where=key, fix=f"choose from: {options}")
        bounds = {name: limit for name, limit in spec.metadata.get("range", {}).items() if limit is not None}
        if value is not None and not all(_BOUND_TESTS[name](value, limit) for name, limit in bounds.items()):
            allowed = " and ".join(f"{_BOUND_SYMBOLS[name]} {limit:g}" for name, limit in bounds.items())
            raise FtuneError(f"must be {allowed}, got {value}", where=key, fix=f"set {key} to a value {allowed}")


_BOUND_TESTS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
_BOUND_SYMBOLS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _compare(node: DictConfig, schema: DictConfig, prefix: str, skip: set[str]) -> None:
    allowed = list(schema.keys())
    for key in node.keys():
        if key in skip:
            continue
        if key not in allowed:
            hint = did_you_mean(str(key), [str(k) for k in allowed])
            hint = hint.replace("`", f"`{prefix}", 1) if hint else ""
            raise FtuneError(f"unknown config key `{prefix}{key}`",
                             fix=f"{hint + ' ' if hint else ''}allowed keys: {', '.join(map(str, allowed))}")
        value, expected = node._get_node(key), schema._get_node(key)
        structured = isinstance(expected, DictConfig) and OmegaConf.get_type(expected) not in (dict, None)
        if isinstance(value, DictConfig) and structured and not expected._is_missing():  # free dicts: any key
            _compare(value, expected, f"{prefix}{key}.", skip=set())
