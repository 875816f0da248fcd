"""Schemas of the task group: one dataclass per task (registered with its class in ftune/registry.py TASKS)
and the data settings each one reads. Values live in configs/task/<name>.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from ftune.config.fields import bounded, choice, empty, section


@dataclass
class DataSourceConfig:
    """Where a task's examples come from (ftune/data/sources.py); each task's data config extends it."""

    hub: str | None = None  # Hugging Face dataset name, e.g. "conll2003", "glue", "squad"
    hub_config: str | None = None  # e.g. "sst2"
    hub_splits: dict[str, str] = empty()  # e.g. {validation: validation_matched}
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
    token_column: int = MISSING
    tag_column: int = MISSING
    tokens_field: str = MISSING
    tags_field: str = MISSING


@dataclass
class NerTaskConfig:
    name: str = MISSING
    data: NerDataConfig = section(NerDataConfig)
    scheme: str = choice("auto", "IOB1", "IOB2", "BIOES")
    max_length: int = bounded(ge=8)  # sub-word tokens per window, special tokens included
    stride: int = bounded(ge=0)  # context tokens kept on each side when a sentence is split into windows
    label_all_tokens: bool = MISSING  # train on every sub-token (metrics still use the first one)


@dataclass
class QaDataConfig(DataSourceConfig):
    """Files: SQuAD JSON ({"data": [...]}) or JSONL {"question", "context", "answers"}."""


@dataclass
class QaTaskConfig:
    name: str = MISSING
    data: QaDataConfig = section(QaDataConfig)
    max_length: int = bounded(ge=16)  # tokens per window (question + context + special tokens)
    doc_stride: int = bounded(ge=0)  # tokens shared by consecutive windows of a long context
    n_best: int = bounded(ge=1)  # start and end candidates kept per window
    max_answer_length: int = bounded(ge=1)  # tokens
    version_2: Any = choice("auto", True, False)  # questions may have no answer (SQuAD v2)
    null_threshold: float = MISSING  # v2: predict "" when null score - best span score > this


@dataclass
class ClassificationDataConfig(DataSourceConfig):
    """Data of the sequence-level tasks (classification, pair_classification, regression, multilabel).
    Files: CSV, TSV (with a header line) or JSONL."""

    format: str = choice("auto", "csv", "tsv", "jsonl")  # auto: from the extension
    text_column: str = MISSING
    text_pair_column: str | None = MISSING  # set for sentence pairs: the two texts are tokenised as a pair
    label_column: str = MISSING


@dataclass
class ClassificationTaskConfig:
    name: str = MISSING
    data: ClassificationDataConfig = section(ClassificationDataConfig)
    max_length: int = bounded(ge=4)  # sub-word tokens, special tokens included; longer inputs are truncated (and counted)
    class_weights: str | None = choice(None, "auto")  # auto: inverse class frequency in train, in the training loss


@dataclass
class PairClassificationTaskConfig(ClassificationTaskConfig):
    positive_label: str | None = MISSING  # class of `positive_f1`; default: the second label of a binary task


@dataclass
class RegressionTaskConfig:
    name: str = MISSING
    data: ClassificationDataConfig = section(ClassificationDataConfig)
    max_length: int = bounded(ge=4)


@dataclass
class MultilabelTaskConfig:
    name: str = MISSING
    data: ClassificationDataConfig = section(ClassificationDataConfig)
    max_length: int = bounded(ge=4)
    label_delimiter: str = MISSING  # splits a label cell such as "sports,politics" (a JSON list is read as such)
    threshold: float = bounded(gt=0, lt=1)  # a label is predicted when its sigmoid probability is at least this


@dataclass
class RelationDataConfig(DataSourceConfig):
    """JSONL: {"text", "head": [start, end), "tail": [start, end), "label"} (character offsets), or
    {"tokens", "head", "tail", "label"} with token indices."""

    format: str = choice("jsonl")
    text_column: str = MISSING
    label_column: str = MISSING
    head_field: str = MISSING
    tail_field: str = MISSING


@dataclass
class RelationTaskConfig:
    name: str = MISSING
    data: RelationDataConfig = section(RelationDataConfig)
    max_length: int = bounded(ge=8)  # longer sentences are cropped around their two entities
    class_weights: str | None = choice(None, "auto")
    no_relation: str | None = MISSING  # left out of the micro P/R/F1 (null: count every label)


@dataclass
class GenerationConfig:
    """`generate` settings of the generative tasks (evaluation, predict, chat)."""

    max_new_tokens: int = bounded(ge=1)
    num_beams: int = bounded(ge=1)
    # off unless a task or the command line sets them: greedy decoding, as transformers' defaults
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
    source_column: str = MISSING
    target_column: str = MISSING


@dataclass
class Seq2seqTaskConfig:
    name: str = MISSING
    data: Seq2seqDataConfig = section(Seq2seqDataConfig)
    prefix: str = MISSING  # prepended to every source, e.g. T5's "summarize: "
    max_source_length: int = bounded(ge=1)  # tokens; longer sources are truncated (and counted)
    max_target_length: int = bounded(ge=1)  # tokens of the training targets
    metrics: str = choice("rouge", "bleu")  # rouge (ROUGE-1/2/L, selects on rougeL) | bleu (BLEU + chrF, selects on bleu)
    generation: GenerationConfig = section(GenerationConfig)


@dataclass
class SftDataConfig(DataSourceConfig):
    """JSONL, one example per line, in any of the formats of ftune/tasks/chat_data.py."""

    format: str = choice("auto", "messages", "alpaca", "sharegpt", "prompt_response", "text")  # auto: per row, by its keys
    messages_field: str = MISSING
    conversations_field: str = MISSING  # ShareGPT
    role_map: dict[str, str] = MISSING  # ShareGPT `from` names → roles, over the usual ones
    prompt_field: str = MISSING
    response_field: str = MISSING
    text_field: str = MISSING  # format text: continued pre-training, every token trains
    system_prompt: str | None = MISSING  # added as a system message to prompt/response and Alpaca examples


@dataclass
class SftTaskConfig:
    name: str = MISSING
    data: SftDataConfig = section(SftDataConfig)
    max_length: int = bounded(ge=8)  # tokens per conversation; longer ones are cut at the end (and counted)
    chat_template: str | None = MISSING  # Jinja template used when the tokenizer has none (null: a ChatML-like one)
    packing: bool = MISSING  # pack a batch's conversations into rows of max_length (attention kept per conversation)
    eval_generate: bool = MISSING  # also generate the last assistant turn at evaluation: exact_match, token_f1, rougeL
    train_on: str = choice("all_turns", "last_turn")  # last_turn: for templates that do not render turn by turn
    neftune_alpha: float | None = bounded(gt=0)  # NEFTune: noise on the input embeddings in training (the paper: 5)
    generation: GenerationConfig = section(GenerationConfig)


@dataclass
class DpoDataConfig(SftDataConfig):
    """JSONL: a prompt in any chat format of sft (`prompt`, `messages`, Alpaca, ShareGPT) + `chosen` and
    `rejected` replies (strings, or lists holding one assistant message)."""

    chosen_field: str = MISSING
    rejected_field: str = MISSING


@dataclass
class DpoTaskConfig:
    name: str = MISSING
    data: DpoDataConfig = section(DpoDataConfig)
    loss: str = choice("sigmoid", "ipo", "orpo", "simpo")  # sigmoid = DPO; orpo and simpo need no reference model
    beta: float | None = bounded(gt=0)  # null: the method's usual value (sigmoid, ipo, orpo: 0.1; simpo: 2.0)
    label_smoothing: float = bounded(ge=0, lt=0.5)  # sigmoid: conservative DPO (probability of flipped labels)
    simpo_gamma: float = MISSING  # simpo: the target reward margin γ
    select: str = choice("loss", "reward_accuracy")  # what selects best/ (validation preference loss by default)
    reference_model: str | None = MISSING  # full fine-tuning: the reference (the YAML default: ${model.name_or_path})
    max_length: int = bounded(ge=8)  # tokens per prompt + reply; longer ones are cut at the end (and counted)
    chat_template: str | None = MISSING
    neftune_alpha: float | None = bounded(gt=0)
    generation: GenerationConfig = section(GenerationConfig)
