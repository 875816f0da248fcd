"""Data settings the tasks share: where examples come from (every task's data config extends
DataSourceConfig), the table columns of the sequence-level tasks, the chat formats of sft and dpo (dpo's adds the replies), and the
`generate` settings. Each task's own schema sits in its module (ftune/tasks/), registered with its class."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from ftune.config.fields import bounded, choice, empty


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
class ClassificationDataConfig(DataSourceConfig):
    """Data of the sequence-level tasks (classification, pair_classification, regression, multilabel).
    Files: CSV, TSV (with a header line) or JSONL."""

    format: str = choice("auto", "csv", "tsv", "jsonl")  # auto: from the extension
    text_column: str = MISSING
    text_pair_column: str | None = MISSING  # set for sentence pairs: the two texts are tokenised as a pair
    label_column: str = MISSING


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
class DpoDataConfig(SftDataConfig):
    """JSONL: a prompt in any chat format of sft (`prompt`, `messages`, Alpaca, ShareGPT) + `chosen` and
    `rejected` replies (strings, or lists holding one assistant message)."""

    chosen_field: str = MISSING
    rejected_field: str = MISSING
