"""Sequence-to-sequence generation (summarisation, translation) with an encoder-decoder model.

An example is {"source", ["target"], "where"}. Training is teacher-forced cross-entropy over the target
tokens (padding is -100 and ignored; the model shifts the labels into its decoder inputs). Evaluation
also generates with the configured beam search and scores the text: ROUGE (metrics=rouge) or BLEU + chrF
(metrics=bleu). `predict` generates only (there is no target to run the teacher-forced pass on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import DataSourceConfig, GenerationConfig
from ftune.data import sources
from ftune.data.batching import feature_column, pad
from ftune.data.readers import checked, iter_jsonl, iter_table, json_object
from ftune.errors import FtuneError
from ftune.paths import resolve
from ftune.tasks import generation as G
from ftune.tasks.base import TaskBase
from ftune.tasks.sequence_data import FORMATS

log = logging.getLogger("ftune")
METRICS = {"rouge": ("rougeL", ("rouge1", "rouge2", "rougeL")), "bleu": ("bleu", ("bleu", "chrf"))}


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


@registry.task("seq2seq", Seq2seqTaskConfig)
class Seq2seqTask(TaskBase):
    name = "seq2seq"
    greater_is_better = True
    pipeline_task = None  # transformers 5 removed the text2text-generation pipeline; use model.generate
    table_columns = ("value",)
    has_labels = False  # no label set: the model's config carries none
    pipeline_tag = "text2text-generation"
    auto_class = "AutoModelForSeq2SeqLM"
    generates = True
    chat_input = "last_user_message"  # a text-to-text model answers the last user message
    explainable, explain_output, explain_texts = True, "generation", ("source",)  # ftune explain: generated tokens

    def __init__(self, cfg: Any):
        if cfg.metrics not in METRICS:
            raise FtuneError(f"unknown metrics `{cfg.metrics}`", where="task.metrics", fix="choose from: rouge, bleu")
        self.cfg, self.labels = cfg, []
        self.main_metric = METRICS[cfg.metrics][0]
        self.tokenizer, self.pad_id = None, 0

    # ---- data ---------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg.data, split, self.iter_file, self._from_hub, "JSONL, CSV or TSV")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        """The examples of a JSONL, CSV or TSV file, streamed (errors with file:line at its end)."""
        kind = self.cfg.data.format
        if kind == "auto":
            kind = FORMATS.get(resolve(path, key).suffix.lower(), "unknown")
        if kind not in ("csv", "tsv", "jsonl"):
            raise FtuneError(f"cannot tell the format of {path}", where="task.data.format",
                             fix="name the file .jsonl, .csv or .tsv, or set task.data.format=jsonl|csv|tsv")
        rows = iter_jsonl(path, key) if kind == "jsonl" else iter_table(path, key, "\t" if kind == "tsv" else ",")
        return self._examples(rows, str(path))

    def _from_hub(self, dataset, split: str) -> list[dict]:
        source = f"{self.cfg.data.hub}/{split}"
        return self._examples(({**row, "where": f"{source}:{i}"} for i, row in enumerate(dataset)), source)

    def _examples(self, rows, source: str):
        data = self.cfg.data

        def check(row: dict) -> dict | str:
            text, target = G.nested(row, data.source_column), G.nested(row, data.target_column)
            bad = [f"`{column}` is missing or not a non-empty string" for column, value
                   in ((data.source_column, text), (data.target_column, target))
                   if not isinstance(value, str) or not value.strip()]
            return "; ".join(bad) if bad else {"source": text, "target": target, "where": row["where"]}

        return checked(rows, check, source,
                       fix="set task.data.source_column / task.data.target_column to the columns that hold the texts")

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        """`predict` lines: plain text, or JSON with the source column (or "source" / "text")."""
        examples = []
        for line in lines:
            row = json_object(line) or {}
            text = G.nested(row, self.cfg.data.source_column) or row.get("source") or row.get("text")
            examples.append({"source": text if isinstance(text, str) else line})
        return examples

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train")

    def check_examples(self, examples: list[dict], split: str) -> None:
        pass  # free text: nothing to check against a trained model

    # ---- model and features ---------------------------------------------------------------------------
    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForSeq2SeqLM

        from ftune.models import load_pretrained

        return load_pretrained(AutoModelForSeq2SeqLM, name_or_path, **kwargs)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_token_id or 0

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        if not examples:
            return []
        sources_ = [self.cfg.prefix + ex["source"] for ex in examples]
        encoded = tokenizer(sources_, truncation=True, max_length=self.cfg.max_source_length)["input_ids"]
        targets = None
        if examples and "target" in examples[0]:
            targets = tokenizer(text_target=[ex["target"] for ex in examples], truncation=True,
                                max_length=self.cfg.max_target_length)["input_ids"]
        features, cut = [], 0
        for i, ids in enumerate(encoded):
            cut += len(ids) >= self.cfg.max_source_length
            feature = {"input_ids": ids, "example": i, "length": len(ids)}
            if targets is not None:
                feature["labels"] = targets[i]
            features.append(feature)
        if cut:
            log.warning("%d of %d source(s) reach task.max_source_length=%d tokens and may be truncated",
                        cut, len(examples), self.cfg.max_source_length)
        return features

    def collate(self, features: list[dict]) -> dict:
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        inputs = {"input_ids": torch.tensor(pad([f["input_ids"] for f in features], self.pad_id)),
                  "attention_mask": mask}
        targets = {}
        if all("labels" in f for f in features):
            # -100 padding: ignored by the loss, and turned into pad tokens by the model's decoder-input shift
            targets["labels"] = inputs["labels"] = torch.tensor(pad([f["labels"] for f in features], -100))
        return {"inputs": inputs, "targets": targets, "tokens": int(mask.sum())}

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["targets"]["labels"]
        total = F.cross_entropy(outputs.logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                reduction="sum")
        return total, (labels != -100).sum()

    def generate(self, model: Any, batch: dict) -> list[str]:
        """Generated texts of a batch (the engine's generation hook; runs under inference_mode)."""
        output = model.generate(input_ids=batch["inputs"]["input_ids"],
                                attention_mask=batch["inputs"]["attention_mask"],
                                **G.generate_kwargs(self.cfg.generation, self.tokenizer))
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def decode(self, outputs: Any, batch: dict) -> list[str]:
        return batch["generated"]

    # ---- metrics and output ---------------------------------------------------------------------------
    # Metrics are fed one evaluation chunk at a time (Engine.evaluate). ROUGE (a mean of per-pair scores) and
    # gen_len are running sums, added pair by pair in split order: identical to one pass. Corpus BLEU and chrF
    # are computed by sacrebleu from all hypotheses and references at once, so with metrics=bleu the state
    # keeps the split's generated and reference texts (only the texts: no features, no other predictions).
    def metric_state(self) -> dict:
        from collections import Counter

        return {"rouge": Counter(), "pairs": 0, "gen_tokens": 0, "hypotheses": [], "references": []}

    def update_metrics(self, state: dict, predictions: list[str], features, examples, first: int = 0) -> None:
        targets = [ex["target"] for ex in examples]  # one Arrow read for a chunk on disk
        references = [targets[i - first] for i in feature_column(features, "example").tolist()]
        if self.cfg.metrics == "rouge":
            G.rouge_totals(predictions, references, state["rouge"])
        else:
            state["hypotheses"] += predictions
            state["references"] += references
        state["pairs"] += len(predictions)
        state["gen_tokens"] += sum(len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in predictions)

    def final_metrics(self, state: dict) -> dict:
        n = max(state["pairs"], 1)
        if self.cfg.metrics == "rouge":
            scores = {name: 100 * state["rouge"][name] / n for name in ("rouge1", "rouge2", "rougeL")}
        else:
            scores = G.bleu_chrf(state["hypotheses"], state["references"])
        return {**scores, "gen_len": state["gen_tokens"] / n}

    def format_predictions(self, predictions: list[str], features: list[dict], examples: list[dict]) -> list[dict]:
        return [{"generated": prediction} for prediction in predictions]

    def metrics_table(self, metrics: dict) -> list[tuple]:
        return G.table_rows(metrics)
