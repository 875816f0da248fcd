"""Reward models: a scalar head on an encoder or a decoder, trained on (prompt, chosen, rejected) pairs with
the Bradley–Terry loss −log σ(r_c − r_r − m) (preference_losses.py), m a margin (`task.margin`, or a pair's
own `margin` field, as Llama 2's reward models).

Data: the pairs of task=dpo (a prompt in any sft chat format, `chosen` and `rejected` replies). A (prompt,
reply) is the chat template's rendering of the conversation when the tokenizer has a template (decoders),
else the prompt's text and the reply as a text pair (encoders: [CLS] prompt [SEP] reply [SEP]); the prompt is
cut first when too long. Chosen and rejected rows of a batch go through the model in one pass.

Metrics: pairwise accuracy (r_c > r_r; selects best/), mean margin r_c − r_r, mean rewards. `predict` and
`serve` score a reply ({"prompt", "response"} or a conversation ending with the assistant's turn) or a pair.
The model is grpo's `reward` reward function (ftune/tasks/rewards.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, section
from ftune.config.tasks import DpoDataConfig
from ftune.data import sources
from ftune.data.batching import pad
from ftune.data.readers import DataErrors, iter_jsonl, json_object
from ftune.errors import FtuneError
from ftune.tasks import chat_data as C
from ftune.tasks.base import TaskBase
from ftune.tasks.preference_losses import bradley_terry

log = logging.getLogger("ftune")


@dataclass
class RewardTaskConfig:
    name: str = MISSING
    data: DpoDataConfig = section(DpoDataConfig)
    margin: float = MISSING  # m in −log σ(r_c − r_r − m); a pair's `margin` field, when present, wins
    max_length: int = bounded(ge=8)  # tokens per prompt + reply; the prompt is cut first
    chat_template: str | None = MISSING  # decoders: used when the tokenizer has none (encoders: text pairs)


def encode(tokenizer: Any, messages: list[dict], reply: str, max_length: int) -> list[int]:
    """Token ids of a reply to a prompt, as the reward model reads them (see the module docstring)."""
    if tokenizer.chat_template and messages:
        text = C.render(tokenizer, [*messages, {"role": "assistant", "content": reply}])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-max_length:]  # keep the reply: the conversation's start goes first
    prompt = "\n".join(m["content"] for m in messages)
    try:
        return tokenizer(prompt, reply, truncation="only_first", max_length=max_length)["input_ids"]
    except Exception:  # the reply alone is too long: both are cut
        return tokenizer(prompt, reply, truncation=True, max_length=max_length)["input_ids"]


def score_texts(model: Any, tokenizer: Any, items: list[tuple[list[dict], str]], max_length: int,
                batch_size: int = 16) -> list[float]:
    """Scores of (prompt messages, reply) items under a reward model (no gradients: the caller's context)."""
    device, scores = next(model.parameters()).device, []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    for start in range(0, len(items), batch_size):
        rows = [encode(tokenizer, m, r, max_length) for m, r in items[start:start + batch_size]]
        ids = torch.tensor(pad(rows, pad_id), device=device)
        mask = torch.tensor(pad([[1] * len(r) for r in rows], 0), device=device)
        scores += model(input_ids=ids, attention_mask=mask).logits.float()[:, 0].tolist()
    return scores


@registry.task("reward", RewardTaskConfig)
class RewardTask(TaskBase):
    name = "reward"
    main_metric, greater_is_better = "accuracy", True
    pipeline_task = "text-classification"
    pipeline_tag = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    onnx_outputs = ("logits",)
    table_columns = ("value",)
    example_input = '{"prompt": "What is 2 + 2?", "response": "4"}'
    card_example = "What is 2 + 2?\t4"

    def __init__(self, cfg: Any):
        self.cfg, self.labels = cfg, ["score"]  # one output; saved as id2label {0: "score"}
        self.tokenizer, self.pad_id = None, 0

    # ---- data ---------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg.data, split, self.iter_file, self._from_hub, "JSONL")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        return self._iter_examples(iter_jsonl(path, key), str(path))

    def _from_hub(self, dataset, split: str):
        source = f"{self.cfg.data.hub}/{split}"
        return self._iter_examples(({**row, "where": f"{source}:{i}"} for i, row in enumerate(dataset)), source)

    def _iter_examples(self, rows, source: str):
        errors, d = DataErrors(source), self.cfg.data
        try:
            for row in rows:
                try:
                    yield self.read_pair(row)
                except ValueError as error:
                    errors.add(row.get("where", "input"), str(error))
        except GeneratorExit:
            errors.raise_if_any(fix=f"each line needs a prompt (`{d.prompt_field}`, `{d.messages_field}`, ...) and "
                                f"`{d.chosen_field}` and `{d.rejected_field}` replies")
            raise
        errors.raise_if_any(fix=f"each line needs a prompt (`{d.prompt_field}`, `{d.messages_field}`, ...) and "
                            f"`{d.chosen_field}` and `{d.rejected_field}` replies")

    def read_pair(self, row: dict) -> dict:
        d = self.cfg.data
        messages = self._prompt(row)
        pair = {side: _text(row, field) for side, field in (("chosen", d.chosen_field), ("rejected", d.rejected_field))}
        margin = row.get("margin", self.cfg.margin)
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            raise ValueError("`margin` must be a number")
        return {"messages": messages, **pair, "margin": float(margin), "where": row.get("where", "")}

    def _prompt(self, row: dict) -> list[dict]:
        found = C.read_row(row, self.cfg.data, need_reply=False)
        if "text" in found:
            raise ValueError(f"a `{self.cfg.data.text_field}` row has no prompt")
        return found["messages"]

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        """`predict`: {"prompt", "response"} (any sft prompt form), a conversation ending with the assistant's
        turn, a pair ({"prompt", "chosen", "rejected"}), or plain text "prompt<TAB>reply"."""
        d, examples = self.cfg.data, []
        for line in lines:
            row = json_object(line)
            try:
                if row is None:
                    prompt, _, reply = line.rpartition("\t")
                    examples.append({"messages": [{"role": "user", "content": prompt}] if prompt else [], "reply": reply})
                elif d.chosen_field in row:
                    examples.append(self.read_pair(row))
                elif isinstance(row.get(d.messages_field), list) and row[d.messages_field] and \
                        row[d.messages_field][-1].get("role") == "assistant":
                    messages = C.read_row(row, d, need_reply=True)["messages"]
                    examples.append({"messages": messages[:-1], "reply": messages[-1]["content"]})
                else:
                    reply = row.get(d.response_field, row.get("completion"))
                    if not isinstance(reply, str):
                        raise ValueError(f"no reply to score: give `{d.response_field}` or `{d.chosen_field}` and "
                                         f"`{d.rejected_field}`")
                    examples.append({"messages": self._prompt({k: v for k, v in row.items() if k != d.response_field}),
                                     "reply": reply})
            except ValueError as error:
                examples.append({"messages": [], "reply": "", "error": str(error)})
        return examples

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train")

    def check_examples(self, examples: list[dict], split: str) -> None:
        """Nothing to check against a trained model: a pair carries no labels (the readers check its shape)."""

    # ---- model, features, loss ------------------------------------------------------------------------
    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForSequenceClassification

        from ftune.models import load_pretrained

        # decoders score their last non-padding token, which they find through the pad id
        return load_pretrained(AutoModelForSequenceClassification, name_or_path, num_labels=1,
                               id2label={0: "score"}, label2id={"score": 0}, pad_token_id=self.pad_id, **kwargs)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        if self.cfg.chat_template:
            tokenizer.chat_template = self.cfg.chat_template
        if tokenizer.pad_token_id is None:  # decoders rarely have one
            if tokenizer.eos_token is None:
                raise FtuneError("the tokenizer has neither a pad nor an EOS token", where="model.name_or_path")
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_token_id

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features, limit = [], self.cfg.max_length
        for i, ex in enumerate(examples):
            if "chosen" in ex:
                c, r = (encode(tokenizer, ex["messages"], ex[side], limit) for side in ("chosen", "rejected"))
                features.append({"chosen_ids": c, "rejected_ids": r, "margin": ex["margin"], "example": i,
                                 "length": len(c) + len(r)})
            else:
                ids = encode(tokenizer, ex["messages"], ex["reply"], limit)
                features.append({"input_ids": ids, "example": i, "length": len(ids)})
        return features

    def collate(self, features: list[dict]) -> dict:
        """Pairs: chosen rows, then rejected rows. `predict` may mix pairs and single replies: `slots` says
        which rows belong to each feature."""
        pairs = [f for f in features if "chosen_ids" in f]
        if len(pairs) == len(features):
            n = len(features)
            rows, slots = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features], \
                [(k, n + k) for k in range(n)]
        else:
            rows, slots = [], []
            for f in features:
                ids = [f["chosen_ids"], f["rejected_ids"]] if "chosen_ids" in f else [f["input_ids"]]
                slots.append(tuple(range(len(rows), len(rows) + len(ids))))
                rows += ids
        mask = torch.tensor(pad([[1] * len(r) for r in rows], 0))
        batch = {"inputs": {"input_ids": torch.tensor(pad(rows, self.pad_id)), "attention_mask": mask},
                 "targets": {}, "tokens": int(mask.sum()), "slots": slots}
        if pairs and len(pairs) == len(features):
            batch["targets"]["margin"] = torch.tensor([f["margin"] for f in features], dtype=torch.float32)
        return batch

    def forward(self, model: Any, batch: dict) -> tuple[None, torch.Tensor, torch.Tensor]:
        """Chosen and rejected rows in one pass; the per-pair rewards stay in the batch for decode."""
        scores = model(**batch["inputs"]).logits.float()[:, 0]
        margin = batch["targets"]["margin"]
        n = margin.shape[0]
        losses = bradley_terry(scores[:n], scores[n:], margin)
        batch["pairs"] = torch.stack([losses, scores[:n], scores[n:]], 1).detach()
        return None, losses.sum(), torch.tensor(n, device=losses.device)

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # never called: `forward` scores chosen and rejected together and returns the Bradley–Terry loss itself
        raise RuntimeError("task=reward computes its loss in forward")

    def decode(self, outputs: Any, batch: dict) -> list:
        if "pairs" in batch:  # (loss, chosen, rejected) per pair
            return [tuple(row) for row in batch["pairs"].float().cpu().tolist()]
        scores = outputs.logits.float()[:, 0].cpu().tolist()
        return [(None, scores[s[0]], scores[s[1]]) if len(s) == 2 else scores[s[0]] for s in batch["slots"]]

    # ---- metrics: running sums over the pairs, in split order ------------------------------------------
    def metric_state(self) -> dict:
        return {"pairs": 0, "correct": 0.0, "margin": 0.0, "chosen": 0.0, "rejected": 0.0}

    def update_metrics(self, state: dict, predictions: list, features, examples, first: int = 0) -> None:
        for _, chosen, rejected in predictions:
            state["pairs"] += 1
            state["correct"] += float(chosen > rejected)
            state["margin"] += chosen - rejected
            state["chosen"] += chosen
            state["rejected"] += rejected

    def final_metrics(self, state: dict) -> dict:
        n = max(state["pairs"], 1)
        return {"accuracy": state["correct"] / n, "margin": state["margin"] / n,
                "rewards_chosen": state["chosen"] / n, "rewards_rejected": state["rejected"] / n,
                "pairs": state["pairs"]}

    def metrics_table(self, metrics: dict) -> list[tuple]:
        return [(k, v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)]

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        rows = []
        for p, ex in zip(predictions, examples, strict=True):
            if "error" in ex:
                rows.append({"error": ex["error"]})
            elif isinstance(p, tuple):
                rows.append({"chosen_score": round(p[1], 6), "rejected_score": round(p[2], 6),
                             "prefers": "chosen" if p[1] > p[2] else "rejected"})
            else:
                rows.append({"score": round(p, 6)})
        return rows


def _text(row: dict, field: str) -> str:
    """A reply: a string, or a list holding one assistant message (TRL's conversational format)."""
    value = row.get(field)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
        value = value[0].get("content")
    if not isinstance(value, str):
        raise ValueError(f"`{field}` must be a string (or a list with one assistant message), got {json.dumps(value)[:40]}")
    return value
