"""Supervised fine-tuning of causal LMs on conversations (instruction and dialogue tuning).

An example is {"messages": [{"role", "content"}, ...], ["answers"], "where"}. A conversation is rendered
with the tokenizer's chat template and the loss covers only what the assistant says: the characters each
assistant turn adds to the rendering (content plus the template's end-of-turn marker, so the model learns to
stop). Those spans are found by rendering the conversation prefix by prefix, which works for any template
that renders a conversation as the concatenation of its turns; a template that does not is refused.

With `packing`, a batch's conversations are packed into rows of up to `max_length` tokens. Position ids
restart at 0 for every conversation and no attention mask is passed: transformers then builds a
block-causal mask from the position ids, so packed conversations never see each other. The model is probed
once when it is built (packed and separate logits must agree), and packing is refused where they do not.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from ftune.data import sources
from ftune.data.batching import pad
from ftune.data.readers import DataErrors, iter_jsonl, json_object
from ftune.errors import FtuneError
from ftune.tasks import generation as G

log = logging.getLogger("ftune")
ROLES = ("system", "user", "assistant")
# Used when the tokenizer has no chat template and task.chat_template is unset: ChatML-like tags, and the
# EOS token after each assistant turn so that generation stops there.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


class SftTask:
    name = "sft"
    main_metric, greater_is_better = "loss", False
    pipeline_task = "text-generation"
    table_columns = ("value",)
    has_labels = False

    def __init__(self, cfg: Any):
        self.cfg, self.labels = cfg, []
        self.tokenizer, self.pad_id = None, 0

    # ---- data ---------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg.data, split, self.iter_file, self._from_hub, "JSONL")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        """The file's conversations, streamed: a large file is never a whole list (errors at the end)."""
        return self._iter_examples(iter_jsonl(path, key), str(path), need_reply=True)

    def _from_hub(self, dataset, split: str) -> list[dict]:
        source = f"{self.cfg.data.hub}/{split}"
        return self._examples([{**row, "where": f"{source}:{i}"} for i, row in enumerate(dataset)], source, True)

    def _examples(self, rows: list[dict], source: str, need_reply: bool) -> list[dict]:
        return list(self._iter_examples(rows, source, need_reply))

    def _iter_examples(self, rows, source: str, need_reply: bool):
        errors, data = DataErrors(source), self.cfg.data
        fix = (f"each line needs `{data.messages_field}` (a list of {{role, content}}) or "
               f"`{data.prompt_field}` and `{data.response_field}` strings")
        try:
            for row in rows:
                try:
                    example = {"messages": self.conversation(row, need_reply), "where": row.get("where", "")}
                except ValueError as error:
                    errors.add(row.get("where", "input"), str(error))
                    continue
                answers = row.get("answers")
                if isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers):
                    example["answers"] = answers  # several acceptable replies, for exact match / token F1
                yield example
        except GeneratorExit:  # closed early (a max_train limit): report the problems in the part read
            errors.raise_if_any(fix=fix)
            raise
        errors.raise_if_any(fix=fix)

    def conversation(self, row: dict, need_reply: bool) -> list[dict]:
        """The checked message list of a data row; ValueError says what is wrong with it."""
        data = self.cfg.data
        if data.messages_field in row:
            messages = row[data.messages_field]
            if not isinstance(messages, list) or not messages:
                raise ValueError(f"`{data.messages_field}` must be a non-empty list")
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise ValueError(f"message {i} needs a role ({', '.join(ROLES)}) and a string content")
            messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        elif isinstance(row.get(data.prompt_field), str):
            messages = [{"role": "user", "content": row[data.prompt_field]}]
            if data.system_prompt:
                messages.insert(0, {"role": "system", "content": data.system_prompt})
            if need_reply or data.response_field in row:
                if not isinstance(row.get(data.response_field), str):
                    raise ValueError(f"`{data.response_field}` must be a string")
                messages.append({"role": "assistant", "content": row[data.response_field]})
        else:
            raise ValueError(f"no `{data.messages_field}` list and no `{data.prompt_field}` string")
        if need_reply and not any(m["role"] == "assistant" for m in messages):
            raise ValueError("no assistant message to learn from")
        if messages[0]["role"] == "assistant":
            raise ValueError("the conversation starts with the assistant: it needs a prompt first")
        return messages

    def read_inputs(self, lines: list[str]) -> list[dict]:
        """`predict` lines: plain text (one user turn) or JSON with `prompt` or `messages` (the reply to the
        last user message is generated)."""
        examples = []
        for line in lines:
            row = json_object(line) or {self.cfg.data.prompt_field: line}
            try:
                messages = self.conversation(row, need_reply=False)
                if messages[-1]["role"] == "assistant":  # a full conversation: answer its last user turn again
                    messages = messages[:max(i for i, m in enumerate(messages) if m["role"] != "assistant") + 1]
                examples.append({"messages": messages})
            except ValueError as error:
                examples.append({"messages": [{"role": "user", "content": line}], "error": str(error)})
        return examples

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train")

    def check_examples(self, examples: list[dict], split: str) -> None:
        pass

    # ---- model and tokenizer --------------------------------------------------------------------------
    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForCausalLM

        from ftune.models import load_pretrained

        model = load_pretrained(AutoModelForCausalLM, name_or_path, **kwargs)
        if self.cfg.packing:
            # A KV cache (created by default, even in training) disables transformers' packed-sequence mask.
            model.config.use_cache = False
            G.check_packing(model)
        return model

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Chat template and pad token; both are saved with the tokenizer into best/ (predict, chat)."""
        if self.cfg.chat_template:
            tokenizer.chat_template = self.cfg.chat_template
        elif not tokenizer.chat_template:
            log.info("the tokenizer has no chat template: using ftune's default (set task.chat_template to choose)")
            tokenizer.chat_template = DEFAULT_TEMPLATE
        if tokenizer.pad_token_id is None:  # causal LMs rarely have one; padding is masked anyway
            if tokenizer.eos_token is None:
                raise FtuneError("the tokenizer has neither a pad nor an EOS token", where="model.name_or_path")
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_token_id

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans that its assistant turns add to it."""
        text, spans = self.render(messages), []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, after = self.render(messages[:i], generation_prompt=True), self.render(messages[:i + 1])
            if not (after.startswith(before) and text.startswith(after)):
                raise FtuneError("the chat template does not render a conversation turn by turn, so the "
                                 "assistant tokens cannot be told apart", where="task.chat_template",
                                 fix="set task.chat_template to a template that renders each message in order")
            spans.append((len(before), len(after)))
        return text, spans

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the conversation up to its last user turn, ending with the assistant header."""
        last = max(i for i, m in enumerate(messages) if m["role"] != "assistant")
        text = self.render(messages[:last + 1], generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.cfg.max_length:]  # keep the most recent context

    # ---- features -------------------------------------------------------------------------------------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features, cut, empty = [], 0, 0
        for i, example in enumerate(examples):
            messages = example["messages"]
            if messages[-1]["role"] != "assistant":  # predict: a prompt to answer, nothing to score
                ids = self.prompt_ids(messages)
                features.append({"input_ids": ids, "prompt_ids": ids, "example": i, "length": len(ids)})
                continue
            text, spans = self.assistant_spans(messages)
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = encoded["input_ids"]
            labels = [t if any(s <= start < e for s, e in spans) else -100
                      for t, (start, _) in zip(ids, encoded["offset_mapping"], strict=True)]
            if len(ids) > self.cfg.max_length:
                cut += 1
                ids, labels = ids[:self.cfg.max_length], labels[:self.cfg.max_length]
            empty += all(label == -100 for label in labels)
            feature = {"input_ids": ids, "labels": labels, "example": i, "length": len(ids)}
            if self.cfg.eval_generate:
                feature["prompt_ids"] = self.prompt_ids(messages)
            features.append(feature)
        if cut:
            log.warning("%d of %d conversation(s) are longer than task.max_length=%d tokens and were cut at the end",
                        cut, len(examples), self.cfg.max_length)
        if empty:
            log.warning("%d conversation(s) have no assistant token left within task.max_length", empty)
        return features

    def collate(self, features: list[dict]) -> dict:
        labelled = all("labels" in f for f in features)
        if self.cfg.packing and labelled and "prompt_ids" not in features[0]:
            return self._packed(features)
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        inputs = {"input_ids": torch.tensor(pad([f["input_ids"] for f in features], self.pad_id)),
                  "attention_mask": mask}
        batch = {"inputs": inputs, "tokens": int(mask.sum()),
                 "segments": [(row, 0, f["length"]) for row, f in enumerate(features)],
                 "targets": {"labels": torch.tensor(pad([f["labels"] for f in features], -100))} if labelled else {}}
        if "prompt_ids" in features[0]:
            batch["prompts"] = [f["prompt_ids"] for f in features]
        return batch

    def _packed(self, features: list[dict]) -> dict:
        """First-fit packing into rows of at most max_length tokens; position ids restart per conversation."""
        rows: list[dict] = []
        segments = []
        for f in features:
            row = next((r for r in rows if len(r["ids"]) + f["length"] <= self.cfg.max_length), None)
            if row is None:
                row = {"ids": [], "labels": [], "positions": []}
                rows.append(row)
            start = len(row["ids"])
            segments.append((rows.index(row), start, start + f["length"]))
            # the first token is never a target: it would be predicted from the previous conversation
            row["ids"] += f["input_ids"]
            row["labels"] += [-100, *f["labels"][1:]]
            row["positions"] += list(range(f["length"]))
        width = max(len(r["ids"]) for r in rows)
        for r in rows:  # padding forms its own "conversation" (positions from 0): it cannot affect real tokens
            r["positions"] += list(range(width - len(r["ids"])))
        inputs = {"input_ids": torch.tensor(pad([r["ids"] for r in rows], self.pad_id)),
                  "position_ids": torch.tensor([r["positions"] for r in rows])}
        return {"inputs": inputs, "targets": {"labels": torch.tensor(pad([r["labels"] for r in rows], -100))},
                "tokens": sum(f["length"] for f in features), "segments": segments}

    # ---- loss, generation, metrics --------------------------------------------------------------------
    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["targets"]["labels"][:, 1:]  # token t is predicted from the tokens before it
        keep = labels != -100
        # only the assistant positions go through the (vocabulary-wide) softmax
        nll = F.cross_entropy(outputs.logits[:, :-1][keep].float(), labels[keep], reduction="none")
        per_token = torch.zeros(labels.shape, device=nll.device)
        per_token[keep] = nll.detach()
        batch["token_nll"] = per_token  # kept for decode (evaluation): per-conversation sums
        return nll.sum(), keep.sum()

    def generate(self, model: Any, batch: dict) -> list[str | None]:
        prompts = batch.get("prompts")
        if prompts is None:
            return [None] * len(batch["segments"])
        return G.generate_replies(model, self.tokenizer, prompts, self.cfg.generation)

    def decode(self, outputs: Any, batch: dict) -> list[dict]:
        results = []
        nll, keep = batch.get("token_nll"), None
        if nll is not None:
            keep = batch["targets"]["labels"][:, 1:] != -100
        for (row, start, end), text in zip(batch["segments"], batch["generated"], strict=True):
            result: dict = {"text": text}
            if nll is not None:  # positions start..end-1 predict tokens start+1..end-1 (labels are shifted)
                span = slice(start, max(end - 1, start))
                result.update(nll=float(nll[row, span].sum()), tokens=int(keep[row, span].sum()))
            results.append(result)
        return results

    def compute_metrics(self, predictions: list[dict], features: list[dict], examples: list[dict]) -> dict:
        nll = sum(p.get("nll", 0.0) for p in predictions)
        tokens = sum(p.get("tokens", 0) for p in predictions)
        loss = nll / max(tokens, 1)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "target_tokens": tokens}
        if self.cfg.eval_generate:
            texts = [p["text"] or "" for p in predictions]
            golds = [examples[f["example"]].get("answers") or [examples[f["example"]]["messages"][-1]["content"]]
                     for f in features]
            metrics.update(G.exact_match_f1(texts, golds))
            metrics["rougeL"] = G.rouge(texts, [g[0] for g in golds])["rougeL"]
        return metrics

    def format_predictions(self, predictions: list[dict], features: list[dict], examples: list[dict]) -> list[dict]:
        return [{"error": ex["error"]} if "error" in ex else {"response": p["text"]}
                for p, ex in zip(predictions, examples, strict=True)]

    def metrics_table(self, metrics: dict) -> list[tuple]:
        return G.table_rows(metrics)

