"""Structured-config schemas, one dataclass per config group, registered in Hydra's ConfigStore.

Every group YAML starts with `defaults: [base_<group>]`, so a misspelled key or a wrong type fails at
composition time, naming the key. Defaults live in the YAML files; the dataclasses say what may be set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ftune.errors import FtuneError, did_you_mean


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run directories, e.g. "minilm"
    # Hub id ("bert-base-cased"), local folder, or "pkg:<python package>/<folder>" for weights
    # shipped inside an installed package (works offline).
    name_or_path: str = MISSING
    revision: str | None = None
    trust_remote_code: bool = False  # run Python code shipped with a hub model: only for models you trust
    allow_pickle: bool = False  # load pickle weights (pytorch_model.bin), which can run code when loaded
    quantization: str | None = None  # null | nf4 | int8: frozen base in 4/8 bits (bitsandbytes) for QLoRA


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
    max_train: int | None = None
    max_validation: int | None = None
    max_test: int | None = None


@dataclass
class NerDataConfig(DataSourceConfig):
    """Files: CoNLL columns or JSONL {"tokens", "tags"}."""

    format: str = "auto"  # auto | conll | jsonl
    token_column: int = 0
    tag_column: int = -1
    tokens_field: str = "tokens"
    tags_field: str = "tags"


@dataclass
class NerTaskConfig:
    name: str = "ner"
    data: NerDataConfig = field(default_factory=NerDataConfig)
    scheme: str = "auto"  # auto | IOB1 | IOB2 | BIOES
    max_length: int = 128  # sub-word tokens per window, special tokens included
    stride: int = 16  # context tokens kept on each side when a sentence is split into windows
    label_all_tokens: bool = False  # train on every sub-token (metrics still use the first one)


@dataclass
class QaDataConfig(DataSourceConfig):
    """Files: SQuAD JSON ({"data": [...]}) or JSONL {"question", "context", "answers"}."""


@dataclass
class QaTaskConfig:
    name: str = "qa"
    data: QaDataConfig = field(default_factory=QaDataConfig)
    max_length: int = 384  # tokens per window (question + context + special tokens)
    doc_stride: int = 128  # tokens shared by consecutive windows of a long context
    n_best: int = 20  # start and end candidates kept per window
    max_answer_length: int = 30  # tokens
    version_2: Any = "auto"  # auto | true | false: questions may have no answer (SQuAD v2)
    null_threshold: float = 0.0  # v2: predict "" when null score - best span score > this


@dataclass
class ClassificationDataConfig(DataSourceConfig):
    """Data of the sequence-level tasks (classification, pair_classification, regression, multilabel).
    Files: CSV, TSV (with a header line) or JSONL."""

    format: str = "auto"  # auto (from the extension) | csv | tsv | jsonl
    text_column: str = "text"
    text_pair_column: str | None = None  # set for sentence pairs: the two texts are tokenised as a pair
    label_column: str = "label"


@dataclass
class ClassificationTaskConfig:
    name: str = "classification"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    max_length: int = 128  # sub-word tokens, special tokens included; longer inputs are truncated (and counted)
    class_weights: str | None = None  # null | auto (inverse class frequency in train, in the training loss)


@dataclass
class PairClassificationTaskConfig(ClassificationTaskConfig):
    name: str = "pair_classification"
    positive_label: str | None = None  # class of `positive_f1`; default: the second label of a binary task


@dataclass
class RegressionTaskConfig:
    name: str = "regression"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    max_length: int = 128


@dataclass
class MultilabelTaskConfig:
    name: str = "multilabel"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    max_length: int = 128
    label_delimiter: str = ","  # splits a label cell such as "sports,politics" (a JSON list is read as such)
    threshold: float = 0.5  # a label is predicted when its sigmoid probability is at least this


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
    max_length: int = 128  # longer sentences are cropped around their two entities
    class_weights: str | None = None
    no_relation: str | None = "no_relation"  # left out of the micro P/R/F1 (null: count every label)


@dataclass
class GenerationConfig:
    """`generate` settings of the generative tasks (evaluation, predict, chat)."""

    max_new_tokens: int = 64
    num_beams: int = 1
    length_penalty: float = 1.0  # beam search only: > 1 favours longer outputs
    do_sample: bool = False  # false: greedy / beam search, reproducible
    temperature: float = 1.0  # sampling only
    top_p: float = 1.0  # sampling only
    repetition_penalty: float = 1.0


@dataclass
class Seq2seqDataConfig(DataSourceConfig):
    """Files: JSONL, CSV or TSV with a source and a target column (dotted names reach into nested fields,
    e.g. `translation.de` in WMT hub datasets)."""

    format: str = "auto"  # auto (from the extension) | csv | tsv | jsonl
    source_column: str = "source"
    target_column: str = "target"


@dataclass
class Seq2seqTaskConfig:
    name: str = "seq2seq"
    data: Seq2seqDataConfig = field(default_factory=Seq2seqDataConfig)
    prefix: str = ""  # prepended to every source, e.g. T5's "summarize: "
    max_source_length: int = 512  # tokens; longer sources are truncated (and counted)
    max_target_length: int = 128  # tokens of the training targets
    metrics: str = "rouge"  # rouge (ROUGE-1/2/L, selects on rougeL) | bleu (BLEU + chrF, selects on bleu)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class SftDataConfig(DataSourceConfig):
    """JSONL: {"messages": [{"role", "content"}, ...]} or {"prompt", "response"} per line."""

    messages_field: str = "messages"
    prompt_field: str = "prompt"
    response_field: str = "response"
    system_prompt: str | None = None  # added as a system message to prompt/response examples


@dataclass
class SftTaskConfig:
    name: str = "sft"
    data: SftDataConfig = field(default_factory=SftDataConfig)
    max_length: int = 1024  # tokens per conversation; longer ones are cut at the end (and counted)
    chat_template: str | None = None  # Jinja template used when the tokenizer has none (null: a ChatML-like one)
    packing: bool = False  # pack a batch's conversations into rows of max_length (attention kept per conversation)
    eval_generate: bool = False  # also generate the last assistant turn at evaluation: exact_match, token_f1, rougeL
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class OptimizerConfig:
    name: str = MISSING  # adamw | sgd | adafactor
    lr: float = 5e-5
    weight_decay: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the optimizer class


@dataclass
class SchedulerConfig:
    name: str = MISSING  # linear | cosine | constant
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # wins over warmup_ratio when > 0


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning through the peft library (ftune/peft.py). The task head always trains."""

    name: str = "none"  # none | lora | adalora | ia3 | prefix_tuning | prompt_tuning
    args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the peft config class


@dataclass
class LoraConfig(PeftConfig):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    bias: str = "none"  # none | all | lora_only
    # null: peft's default for the architecture (BERT: query, value); a list of module names; or all-linear
    target_modules: Any = None


@dataclass
class AdaLoraConfig(LoraConfig):
    """LoRA whose ranks are re-allocated during training (init_r per matrix, shrinking to target_r on average)."""

    init_r: int = 12
    target_r: int = 8
    tinit: float = 0.1  # fraction of training steps before ranks start to shrink
    tfinal: float = 0.2  # fraction of training steps at the end with ranks fixed
    deltaT: int = 10  # steps between re-allocations


@dataclass
class IA3Config(PeftConfig):
    target_modules: list[str] | None = None  # null: peft's default (BERT: key, value, output.dense)
    feedforward_modules: list[str] | None = None


@dataclass
class PromptLearningConfig(PeftConfig):
    num_virtual_tokens: int = 20


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    prefix_projection: bool = False  # reparameterise the prefix through an MLP (more parameters, steadier)
    encoder_hidden_size: int | None = None  # of that MLP; null: the model's hidden size


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    init: str = "random"  # random | text (initialise the soft prompt from the embeddings of init_text)
    init_text: str | None = None


@dataclass
class FreezeConfig:
    """Partial fine-tuning without PEFT (ftune/freeze.py): which weights keep requires_grad."""

    name: str = "none"
    embeddings: bool = False  # freeze the embedding layer
    bottom_layers: int = 0  # freeze the first N transformer layers
    train_only: str | None = None  # null | head (linear probe) | bias (BitFit: biases + head)


@dataclass
class TrainerConfig:
    epochs: int = 3
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 32  # examples per optimizer step on each device, before accumulation
    eval_batch_size: int = 64
    grad_accum: int = 1  # micro-batches per optimizer step; the loss is normalised over all their targets
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    max_grad_norm: float | None = 1.0
    eval_every: int | None = None  # optimizer steps between evaluations (always at epoch end)
    save_every: int | None = None  # optimizer steps between checkpoints (always at epoch end)
    log_every: int = 10
    patience: int | None = None  # evaluations without improvement before stopping early
    keep_last: int = 2  # checkpoints kept in checkpoints/
    seed: int = 42
    group_by_length: bool = True
    cache_features: bool = True  # keep tokenised features on disk ($FTUNE_CACHE_DIR) for the next run
    nonfinite: str = "stop"  # NaN/inf loss or gradients: stop | skip (the update; counted) | ignore (no check)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps
    compile: bool = False  # torch.compile the model (pays off on GPUs; measured no gain on a 2-core CPU)
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    strategy: str = "ddp"  # several processes: ddp (whole model on each) | fsdp (FSDP2, sharded; ftune/engine/strategy.py)


@dataclass
class LoggerConfig:
    console: str = "auto"  # auto (rich bar on a terminal, plain lines otherwise) | rich | plain | none
    jsonl: bool = True
    tensorboard: bool = False


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
    run_dir: str = MISSING
    resume: Any = False  # false | true (latest checkpoint) | path to a checkpoint folder
    overwrite: bool = False  # allow training into a run directory that already holds a run
    output_format: str = "table"  # table | json (results as one JSON document on stdout, tables on stderr)


@dataclass
class EvalConfig:
    run_dir: str | None = None  # a training run; its saved config.yaml is reused
    model_dir: str | None = None  # or any Hugging Face model folder (then `task=` is required); CLI: model=
    task: Any = None
    split: str = "validation"  # validation | test | train
    file: str | None = None  # evaluate this data file instead of a configured split
    checkpoint: str = "best"  # best | last | <path to a checkpoint or model folder>
    batch_size: int = 64
    device: str = "auto"
    check: Any = None  # metric gate for CI, e.g. 'f1>=0.85' or 'f1>=0.85,loss<=0.5': exit 1 when missed
    output_format: str = "table"  # table | json (metrics as one JSON document on stdout, the table on stderr)


@dataclass
class ChatConfig:
    run_dir: str | None = None  # a training run of task=sft
    model_dir: str | None = None  # or any causal-LM folder with a chat template; CLI: model=
    task: Any = None
    checkpoint: str = "best"
    system_prompt: str | None = None
    max_new_tokens: int | None = None  # default: the run's task.generation.max_new_tokens
    device: str = "auto"


@dataclass
class DataCheckConfig:
    task: Any = MISSING


@dataclass
class PredictConfig:
    run_dir: str | None = None
    model_dir: str | None = None
    task: Any = None
    checkpoint: str = "best"
    input: str = "-"  # file of text lines or JSONL, or - for stdin
    output: str = "-"  # JSONL file, or - for stdout
    batch_size: int = 64
    device: str = "auto"


@dataclass
class ExportConfig:
    run_dir: str = MISSING  # a training run
    out: str = MISSING  # folder to write (must not exist, unless overwrite=true)
    checkpoint: str = "best"  # best | last | <path to a checkpoint folder>
    merge: bool = False  # PEFT runs: fold the adapter into the base weights (a plain transformers model)
    check: bool = True  # compare the exported model's outputs with the run's on validation examples
    overwrite: bool = False


TASK_SCHEMAS: dict[str, type] = {
    "ner": NerTaskConfig,
    "qa": QaTaskConfig,
    "classification": ClassificationTaskConfig,
    "pair_classification": PairClassificationTaskConfig,
    "regression": RegressionTaskConfig,
    "multilabel": MultilabelTaskConfig,
    "relation": RelationTaskConfig,
    "seq2seq": Seq2seqTaskConfig,
    "sft": SftTaskConfig,
}

PEFT_SCHEMAS: dict[str, type] = {
    "none": PeftConfig,
    "lora": LoraConfig,
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
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)
    for name, schema in TASK_SCHEMAS.items():
        cs.store(group="task", name=f"base_{name}", node=schema)
    for name, schema in PEFT_SCHEMAS.items():
        if name != "none":
            cs.store(group="peft", name=f"base_{name}", node=schema)
    # hparams_search/*.yaml: Optuna's direction follows the task (maximize F1, minimize a loss-like metric)
    OmegaConf.register_new_resolver("ftune_direction", _direction, replace=True)


def _direction(task_name: str) -> str:
    from ftune.registry import TASKS, lookup

    module, _, cls = lookup(TASKS, task_name, "task", "task.name").partition(":")
    import importlib

    return "maximize" if getattr(importlib.import_module(module), cls).greater_is_better else "minimize"


def check_known_keys(cfg: DictConfig) -> None:
    """Reject keys that no schema declares, e.g. added with `+trainer.epochz=3` (they would do nothing)."""
    schemas = {group: schema for group, schema in GROUP_SCHEMAS.items() if isinstance(cfg.get(group), DictConfig)}
    if isinstance(cfg.get("task"), DictConfig) and cfg.task.get("name") in TASK_SCHEMAS:
        schemas["task"] = TASK_SCHEMAS[cfg.task.name]
    if isinstance(cfg.get("peft"), DictConfig) and cfg.peft.get("name") in PEFT_SCHEMAS:
        schemas["peft"] = PEFT_SCHEMAS[cfg.peft.name]
    top = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig, "data": DataCheckConfig,
           "export": ExportConfig, "chat": ChatConfig}
    for schema in top.values():
        if set(cfg.keys()) <= set(OmegaConf.structured(schema).keys()):
            break
    else:
        schema = TrainConfig
    _compare(cfg, OmegaConf.structured(schema), "", skip=set(schemas))
    for group, group_schema in schemas.items():
        _compare(cfg[group], OmegaConf.structured(group_schema), f"{group}.", skip={"args"})


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
