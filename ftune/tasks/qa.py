"""Extractive question answering (SQuAD v1.1 and v2.0).

Question + context are tokenised into overlapping windows (`max_length`, `doc_stride`) with offset mappings. Each
window keeps only the n-best start and end positions of its logits (small host lists), and answers are assembled
per question across windows: valid spans inside the context, at most `max_answer_length` tokens, and for v2 the
empty answer when the best null score beats the best span by more than `null_threshold`. EM and F1 use the
official SQuAD normalisation. `ftune explain` attributes each window's best span (squad.span_targets).
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import DataSourceConfig
from ftune.data import sources
from ftune.data.batching import feature_column, pad
from ftune.data.readers import DataErrors, read_lines
from ftune.errors import FtuneError
from ftune.paths import existing_file
from ftune.tasks.base import TaskBase
from ftune.tasks.generation import normalize_answer, token_f1
from ftune.tasks.squad import iter_squad, span_positions, span_targets, top_pairs


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


@registry.task("qa", QaTaskConfig)
class QaTask(TaskBase):
    name = "qa"
    prompting = "answer"  # ftune eval prompt=...: generated and parsed (ftune/prompted/)
    example_input = '{"question": "Who won?", "context": "The Broncos beat the Panthers ."}'
    main_metric, greater_is_better = "f1", True
    pipeline_task = None  # transformers 5 removed the question-answering pipeline; best/ loads with auto_class
    table_columns = ("exact", "f1", "questions")
    pipeline_tag = "question-answering"
    auto_class = "AutoModelForQuestionAnswering"
    onnx_outputs = ("start_logits", "end_logits")
    explainable, explain_output, explain_texts = True, "span", ("question", "context")  # ftune explain: the answer
    card_usage = ("inputs = tokenizer('Who won?', 'The Broncos beat the Panthers.', return_tensors='pt')",
                  "out = model(**inputs)",
                  "start, end = int(out.start_logits.argmax()), int(out.end_logits.argmax())",
                  "print(tokenizer.decode(inputs['input_ids'][0][start:end + 1]))")

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if cfg.doc_stride >= cfg.max_length // 2:
            raise FtuneError(f"windows of {cfg.max_length} tokens cannot share {cfg.doc_stride}",
                             where="task.doc_stride", fix=f"set task.doc_stride below {cfg.max_length // 2}")

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.labels: list[str] = []  # span prediction has no label set
        self.version_2 = cfg.version_2 if cfg.version_2 != "auto" else None
        self.pad_id = 0

    # ---- data -------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg.data, split, self.iter_file, self._from_hub, "SQuAD JSON")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        """Questions of a SQuAD JSON file, or of JSONL (one question per line, streamed)."""
        file = existing_file(path, key)
        if file.suffix in (".jsonl", ".ndjson"):
            return self._iter_inputs((line for _, line in read_lines(file)), where=str(path))
        # A SQuAD file is one JSON document: it is parsed whole (the standard library has no streaming JSON
        # parser); the questions are then yielded one by one, so only the parsed document is held, and
        # sources.load_split writes the questions to Arrow in chunks. Convert very large sets to JSONL.
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw.count(b"\n", 0, error.start) + 1
            raise FtuneError("bytes that are not UTF-8", where=f"{path}:{line}", fix="re-encode the file as UTF-8") from error
        del raw
        try:
            articles = json.loads(text)["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise FtuneError(f"not SQuAD JSON ({error})", where=str(path),
                             fix='expected {"data": [{"paragraphs": [{"context", "qas": [...]}]}]}') from error
        return iter_squad(articles, str(path))

    def _from_hub(self, dataset, split: str) -> list[dict]:
        return ({"id": row["id"], "question": row["question"], "context": row["context"],
                 "answers": [{"text": t, "start": s} for t, s in zip(row["answers"]["text"],
                                                                      row["answers"]["answer_start"], strict=True)],
                 "impossible": not row["answers"]["text"], "where": f"{self.cfg.data.hub}/{split}:{i}"}
                for i, row in enumerate(dataset))  # streamed

    def read_inputs(self, lines: list[str], where: str = "input", first_line: int = 1) -> list[dict]:
        """JSONL with "question" and "context" (and optional "id", "answers" as in SQuAD). Lines are numbered
        from `first_line` (predict's later chunks): a question without an "id" gets its line number."""
        return list(self._iter_inputs(lines, where, first_line))

    def _iter_inputs(self, lines, where: str = "input", first_line: int = 1):
        for number, line in enumerate(lines, start=first_line):
            try:
                row = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError:
                row = {}
            row = row if isinstance(row, dict) else {}
            answers = row.get("answers") or []
            yield {"id": str(row.get("id", number)), "question": str(row.get("question", "")),
                   "context": str(row.get("context", "")), "where": f"{where}:{number}",
                   "answers": [{"text": a["text"], "start": a.get("answer_start", a.get("start"))}
                               for a in answers if isinstance(a, dict) and "text" in a],
                   "impossible": bool(row.get("is_impossible", False))}

    # ---- validation ---------------------------------------------------------------------------------
    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train")
        for split, examples in {"train": train, **others}.items():
            self.check_examples(examples, split)
        if self.version_2 is None:
            self.version_2 = any(ex["impossible"] or not ex["answers"] for ex in train)

    def check_examples(self, examples: list[dict], split: str) -> None:
        errors, seen = DataErrors(f"the {split} split"), set()
        for ex in examples:
            if ex["id"] in seen:
                errors.add(ex["where"], f"duplicate question id `{ex['id']}`")
            seen.add(ex["id"])
            if not ex["question"].strip() or not ex["context"].strip():
                errors.add(ex["where"], "empty question or context")
            for answer in ex["answers"]:
                start = answer["start"]
                if not isinstance(start, int) or ex["context"][start:start + len(answer["text"])] != answer["text"]:
                    errors.add(ex["where"], f"answer {answer['text'][:40]!r} is not found at {start} in its context")
        errors.raise_if_any(fix="fix the SQuAD file: ids unique, answer_start pointing at the answer text")

    # ---- model and features -------------------------------------------------------------------------
    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForQuestionAnswering

        from ftune.models import load_pretrained

        return load_pretrained(AutoModelForQuestionAnswering, name_or_path, **kwargs)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id or 0
        self.with_types = "token_type_ids" in tokenizer.model_input_names

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features = []
        for first in range(0, len(examples), 256):
            chunk = examples[first:first + 256]
            try:
                encoded = tokenizer([ex["question"].lstrip() for ex in chunk], [ex["context"] for ex in chunk],
                                    truncation="only_second", max_length=self.cfg.max_length,
                                    stride=self.cfg.doc_stride, return_overflowing_tokens=True,
                                    return_offsets_mapping=True)
            except Exception as error:  # the tokenizer's message for an over-long question is cryptic
                raise FtuneError(f"a question does not fit in max_length {self.cfg.max_length} ({error})",
                                 where="task.max_length", fix="raise task.max_length or shorten the questions") from error
            for i, local in enumerate(encoded["overflow_to_sample_mapping"]):
                sequence = encoded.sequence_ids(i)
                offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence, strict=True)]
                feature = {"input_ids": encoded["input_ids"][i], "offsets": offsets, "example": first + local,
                           "length": len(encoded["input_ids"][i])}
                if self.with_types:
                    feature["token_type_ids"] = encoded["token_type_ids"][i]
                feature["start"], feature["end"] = span_positions(chunk[local], offsets)
                features.append(feature)
        return features

    def collate(self, features: list[dict]) -> dict:
        ids = torch.tensor(pad([f["input_ids"] for f in features], self.pad_id))
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        inputs = {"input_ids": ids, "attention_mask": mask}
        if features and "token_type_ids" in features[0]:
            inputs["token_type_ids"] = torch.tensor(pad([f["token_type_ids"] for f in features], 0))
        width = ids.shape[1]
        context = torch.tensor([[o is not None for o in f["offsets"]] + [False] * (width - f["length"])
                                for f in features])
        return {"inputs": inputs, "context": context, "tokens": int(mask.sum()),
                "targets": {"start": torch.tensor([f["start"] for f in features]),
                            "end": torch.tensor([f["end"] for f in features])}}

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        targets = batch["targets"]
        start = F.cross_entropy(outputs.start_logits.float(), targets["start"], reduction="sum")
        end = F.cross_entropy(outputs.end_logits.float(), targets["end"], reduction="sum")
        count = torch.tensor(len(targets["start"]), device=start.device)
        return (start + end) / 2, count

    def decode(self, outputs: Any, batch: dict) -> list[tuple]:
        # [batch, tokens] floats per window: small; reduced to the n-best at once
        start, end = outputs.start_logits.float().cpu(), outputs.end_logits.float().cpu()
        null = (start[:, 0] + end[:, 0]).tolist()
        context = batch["context"]
        k = min(self.cfg.n_best, start.shape[1])
        start_top = start.masked_fill(~context, -math.inf).topk(k, dim=-1)
        end_top = end.masked_fill(~context, -math.inf).topk(k, dim=-1)
        return [(null[b], top_pairs(start_top, b), top_pairs(end_top, b)) for b in range(start.shape[0])]

    def explain_targets(self, feature: dict, probabilities: Any, target: str | None) -> list[dict]:
        return span_targets(feature, probabilities, self.cfg.max_answer_length, target)

    # ---- answers and metrics ------------------------------------------------------------------------
    def _answers(self, predictions: list, features, examples, first: int = 0) -> list[dict]:
        """The answer of each of examples[first:first + len(examples)] (`features`: exactly their windows)."""
        by_example: dict[int, list[int]] = collections.defaultdict(list)
        for index, owner in enumerate(feature_column(features, "example").tolist()):
            by_example[owner - first].append(index)
        # one Arrow read of the column for features on disk (indexing rows one by one would read each)
        windows = [f["offsets"] for f in features] if isinstance(features, list) else features["offsets"]
        answers = []
        for e, ex in enumerate(examples):
            candidates, null = [], math.inf
            for index in by_example.get(e, []):
                null_score, starts, ends = predictions[index]
                null = min(null, null_score)
                offsets = windows[index]
                for s, s_logit in starts:
                    for t, e_logit in ends:
                        if t < s or t - s + 1 > self.cfg.max_answer_length:
                            continue
                        begin, finish = offsets[s][0], offsets[t][1]
                        candidates.append((s_logit + e_logit, begin, finish))
            candidates.sort(reverse=True)
            best = candidates[0] if candidates else (-math.inf, 0, 0)
            no_answer = self.version_2 and (not candidates or null - best[0] > self.cfg.null_threshold)
            scores = [c[0] for c in candidates[: self.cfg.n_best]] + ([null] if self.version_2 else [])
            top = max(scores) if scores else 0.0
            total = sum(math.exp(x - top) for x in scores) if scores else 1.0
            chosen = null if no_answer else best[0]
            answers.append({"id": ex["id"], "answer": "" if no_answer else ex["context"][best[1]:best[2]],
                            "start": None if no_answer else best[1], "end": None if no_answer else best[2],
                            "score": round(math.exp(chosen - top) / total, 4) if scores else 0.0})
        return answers

    # Metrics are sums of per-question scores (EM, F1) and counts, accumulated one evaluation chunk at a time
    # (Engine.evaluate; a chunk holds whole questions with all their windows). The answer texts a score
    # needs live only while their chunk is scored. Sums are added question by question in split order, as
    # Python's sum() over one list adds them, so the means are identical to the last bit.
    def metric_state(self) -> dict:
        return {"questions": 0, **{name: [0, 0, 0] for name in ("all", "HasAns", "NoAns")}}  # [EM sum, F1 sum, n]

    def update_metrics(self, state: dict, predictions: list, features, examples, first: int = 0) -> None:
        examples = examples if isinstance(examples, list) else list(examples)
        answers = self._answers(predictions, features, examples, first)
        for ex, predicted in zip(examples, answers, strict=True):
            gold = [a["text"] for a in ex["answers"] if normalize_answer(a["text"])] or [""]
            exact = max(float(normalize_answer(predicted["answer"]) == normalize_answer(g)) for g in gold)
            f1 = max(token_f1(predicted["answer"], g) for g in gold)
            for name in ("all", "HasAns" if gold != [""] else "NoAns"):
                sums = state[name]
                sums[0], sums[1], sums[2] = sums[0] + exact, sums[1] + f1, sums[2] + 1
        state["questions"] += len(examples)

    def final_metrics(self, state: dict) -> dict:
        def mean(name: str, column: int) -> float:
            return state[name][column] / state[name][2] if state[name][2] else 0.0

        metrics = {"exact": mean("all", 0) * 100, "f1": mean("all", 1) * 100, "questions": state["questions"]}
        if self.version_2:
            for name in ("HasAns", "NoAns"):
                metrics.update({f"{name}_exact": mean(name, 0) * 100, f"{name}_f1": mean(name, 1) * 100,
                                f"{name}_questions": state[name][2]})
        return metrics

    def metrics_table(self, metrics: dict) -> list[tuple]:
        table = [("all", metrics["exact"], metrics["f1"], metrics["questions"])]
        for name in ("HasAns", "NoAns"):
            if f"{name}_f1" in metrics:
                table.append((name, metrics[f"{name}_exact"], metrics[f"{name}_f1"], metrics[f"{name}_questions"]))
        return table

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        return [{"id": ex["id"], "question": ex["question"], **{k: v for k, v in answer.items() if k != "id"}}
                for ex, answer in zip(examples, self._answers(predictions, features, examples), strict=True)]
