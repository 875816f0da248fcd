"""Supervised fine-tuning of causal LMs on conversations (instruction and dialogue tuning), or on plain text.

An example is {"messages": [{"role", "content"}, ...], ["answers"], "where"}, or {"text", "where"} for
continued pre-training. Data formats, chat rendering and the loss mask live in `chat_data` (shared with
dpo): the loss covers only what the assistant says, its end-of-turn marker included; plain text trains
every token.

With `packing`, a batch's conversations are packed into rows of up to `max_length` tokens. Position ids
restart at 0 for every conversation and no attention mask is passed: transformers then builds a
block-causal mask from the position ids, so packed conversations never see each other. The model is probed
once when it is built (packed and separate logits must agree), and packing is refused where they do not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import GenerationConfig, SftDataConfig
from ftune.data import sources
from ftune.data.batching import feature_column, pack_conversations, pad
from ftune.data.readers import DataErrors, iter_jsonl, json_object
from ftune.errors import FtuneError
from ftune.models import add_neftune
from ftune.tasks import chat_data as C
from ftune.tasks import generation as G
from ftune.tasks.base import TaskBase
from ftune.tasks.chat_data import DEFAULT_TEMPLATE  # noqa: F401 (re-exported: tests and users import it here)

log = logging.getLogger("ftune")
TRAIN_ON = ("all_turns", "last_turn")


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


@registry.task("sft", SftTaskConfig)
class SftTask(TaskBase):
    name = "sft"
    main_metric, greater_is_better = "loss", False
    pipeline_task = "text-generation"
    table_columns = ("value",)
    has_labels = False
    pipeline_tag = "text-generation"
    auto_class = "AutoModelForCausalLM"
    card_example = "What is the capital of France?"
    generates = True
    chat_input = "messages"
    explainable, explain_output, explain_texts = True, "generation", ()  # ftune explain: each generated token
    gguf_export = True

    def __init__(self, cfg: Any):
        self.cfg, self.labels = cfg, []
        self.tokenizer, self.pad_id = None, 0
        if cfg.data.format not in C.FORMATS:
            raise FtuneError(f"unknown format `{cfg.data.format}`", where="task.data.format",
                             fix=f"choose from: {', '.join(C.FORMATS)}")
        if cfg.get("train_on", "all_turns") not in TRAIN_ON:
            raise FtuneError(f"unknown value `{cfg.train_on}`", where="task.train_on", fix="choose from: all_turns, last_turn")

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
        return self._iter_examples(({**row, "where": f"{source}:{i}"} for i, row in enumerate(dataset)), source, True)

    def _examples(self, rows: list[dict], source: str, need_reply: bool) -> list[dict]:
        return list(self._iter_examples(rows, source, need_reply))

    def _iter_examples(self, rows, source: str, need_reply: bool):
        errors, fix = DataErrors(source), self._format_fix()
        try:
            for row in rows:
                try:
                    example = {**C.read_row(row, self.cfg.data, need_reply), "where": row.get("where", "")}
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

    def _format_fix(self) -> str:
        d = self.cfg.data
        return (f"each line needs `{d.messages_field}` (a list of {{role, content}}), `{d.conversations_field}` "
                f"(ShareGPT), `instruction` + `output` (Alpaca), `{d.prompt_field}` + `{d.response_field}` or "
                f"`{d.text_field}` (task.data.format={d.format})")

    def conversation(self, row: dict, need_reply: bool) -> list[dict]:
        """The checked message list of a data row in any chat format; ValueError says what is wrong with it."""
        fmt = C.detect(row, self.cfg.data)
        if fmt == "text":
            raise ValueError(f"a `{self.cfg.data.text_field}` row is no conversation")
        return C.read_row(row, self.cfg.data, need_reply, fmt)["messages"]

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
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
        add_neftune(model, self.cfg.get("neftune_alpha"))
        if self.cfg.get("packing"):
            # A KV cache (created by default, even in training) disables transformers' packed-sequence mask.
            model.config.use_cache = False
            G.check_packing(model)
        return model

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Chat template and pad token; both are saved with the tokenizer into best/ (predict, chat)."""
        C.bind_template(tokenizer, self.cfg.chat_template)
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_token_id

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return C.render(self.tokenizer, messages, generation_prompt)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the conversation up to its last user turn, ending with the assistant header."""
        return C.prompt_ids(self.tokenizer, messages, self.cfg.max_length)

    # ---- features -------------------------------------------------------------------------------------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features, encoded, last_turn = [], [], self.cfg.get("train_on") == "last_turn"
        for i, example in enumerate(examples):
            if "text" in example and self.cfg.eval_generate:
                raise FtuneError(f"{example.get('where') or 'a text row'}: plain text has no reply to generate",
                                 where="task.eval_generate", fix="set task.eval_generate=false for plain text data")
            if "text" in example:  # continued pre-training: windows of max_length, every token trained
                parts = C.encode_text(tokenizer, example["text"], self.cfg.max_length)
            elif example["messages"][-1]["role"] != "assistant":  # predict: a prompt to answer, nothing to score
                ids = self.prompt_ids(example["messages"])
                features.append({"input_ids": ids, "prompt_ids": ids, "example": i, "length": len(ids)})
                continue
            else:
                parts = [C.encode_chat(tokenizer, example["messages"], self.cfg.max_length, last_turn)]
            encoded += parts
            for part in parts:
                feature = {"input_ids": part["input_ids"], "labels": part["labels"], "example": i,
                           "length": len(part["input_ids"])}
                if self.cfg.eval_generate and "messages" in example:
                    feature["prompt_ids"] = self.prompt_ids(example["messages"])
                features.append(feature)
        cut = sum(e["cut"] for e in encoded)
        if cut:
            log.warning("%d of %d conversation(s) are longer than task.max_length=%d tokens and were cut at the end",
                        cut, len(examples), self.cfg.max_length)
        C.check_trained(encoded, len(examples), tokenizer)
        return features

    def collate(self, features: list[dict]) -> dict:
        labelled = all("labels" in f for f in features)
        if self.cfg.get("packing") and labelled and "prompt_ids" not in features[0]:
            return pack_conversations(features, self.cfg.max_length, self.pad_id)
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        inputs = {"input_ids": torch.tensor(pad([f["input_ids"] for f in features], self.pad_id)),
                  "attention_mask": mask}
        batch = {"inputs": inputs, "tokens": int(mask.sum()),
                 "segments": [(row, 0, f["length"]) for row, f in enumerate(features)],
                 "targets": {"labels": torch.tensor(pad([f["labels"] for f in features], -100))} if labelled else {}}
        if "prompt_ids" in features[0]:
            batch["prompts"] = [f["prompt_ids"] for f in features]
        return batch

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

    # Metrics are running sums (target NLL and tokens; EM, token F1 and ROUGE-L per generated reply), added
    # example by example in split order one evaluation chunk at a time (Engine.evaluate): the generated texts
    # live only while their chunk is scored, and the results equal one pass over the whole split exactly.
    def metric_state(self) -> dict:
        from collections import Counter

        return {"nll": 0, "tokens": 0, "chats": 0, "em": 0.0, "f1": 0.0, "rouge": Counter()}

    def update_metrics(self, state: dict, predictions: list[dict], features, examples, first: int = 0) -> None:
        for p in predictions:
            state["nll"] += p.get("nll", 0.0)
            state["tokens"] += p.get("tokens", 0)
        if not self.cfg.eval_generate:
            return
        examples = examples if isinstance(examples, list) else list(examples)
        owners = [examples[i - first] for i in feature_column(features, "example").tolist()]
        chats = [i for i, ex in enumerate(owners) if "messages" in ex]  # not plain text
        texts = [predictions[i]["text"] or "" for i in chats]
        golds = [owners[i].get("answers") or [owners[i]["messages"][-1]["content"]] for i in chats]
        state["em"], state["f1"] = G.exact_match_f1_sums(texts, golds, state["em"], state["f1"])
        if chats:
            G.rouge_totals(texts, [g[0] for g in golds], state["rouge"])
        state["chats"] += len(chats)

    def final_metrics(self, state: dict) -> dict:
        tokens = state["tokens"]
        loss = state["nll"] / max(tokens, 1)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "target_tokens": tokens}
        if self.cfg.eval_generate and state["chats"]:
            n = state["chats"]
            metrics.update(exact_match=100 * state["em"] / n, token_f1=100 * state["f1"] / n,
                           rougeL=100 * state["rouge"]["rougeL"] / n)
        return metrics

    def format_predictions(self, predictions: list[dict], features: list[dict], examples: list[dict]) -> list[dict]:
        return [{"error": ex["error"]} if "error" in ex else {"response": p["text"]}
                for p, ex in zip(predictions, examples, strict=True)]

    def metrics_table(self, metrics: dict) -> list[tuple]:
        return G.table_rows(metrics)
