"""Causal-LM continued pretraining on raw text (not chat: every token of every document trains).

Documents (ftune/tasks/text_corpus.py) are tokenised (with the tokenizer's BOS where it adds one), each ended
by EOS, and packed in order into blocks of `max_length` tokens; a document longer than the room left goes on
in the next block. A block stores its tokens and where each document (or piece of one) starts. `collate`
runs transformers' `DataCollatorWithFlattening` over each block's pieces: position ids restart at 0 for
every piece and the first token of a piece is no target (it would be predicted from another document).
No attention mask is passed, so transformers builds a block-causal mask from the position ids and no
document attends to another (probed once when the model is built, as sft's packing is). The loss is the
mean NLL of the targets; metrics: loss, perplexity and next-token accuracy. Works with peft=lora/qlora.
`predict` continues each input line (greedy by default: task.generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, section
from ftune.config.tasks import GenerationConfig
from ftune.data.batching import pad
from ftune.errors import FtuneError
from ftune.tasks import generation as G
from ftune.tasks.text_corpus import CorpusTask, TextDataConfig, row_sums


@dataclass
class ClmTaskConfig:
    name: str = MISSING
    data: TextDataConfig = section(TextDataConfig)
    max_length: int = bounded(ge=8)  # tokens per packed block
    generation: GenerationConfig = section(GenerationConfig)  # predict: how inputs are continued


@registry.task("clm", ClmTaskConfig)
class ClmTask(CorpusTask):
    name = "clm"
    pipeline_tag = "text-generation"
    pipeline_task = "text-generation"
    auto_class = "AutoModelForCausalLM"
    card_example = "The capital of France is"
    example_input = "The capital of France is"
    generates = True
    gguf_export = True

    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForCausalLM

        from ftune.models import load_pretrained

        model = load_pretrained(AutoModelForCausalLM, name_or_path, **kwargs)
        model.config.use_cache = False  # a KV cache disables transformers' packed-sequence mask
        try:
            G.check_packing(model)
        except FtuneError as error:
            raise FtuneError(error.what, where="task", fix="use trainer settings whose attention honours position "
                             "ids (sdpa or eager attention)") from error
        return model

    def bind_tokenizer(self, tokenizer: Any) -> None:
        if tokenizer.eos_token_id is None:
            raise FtuneError(f"the tokenizer of {tokenizer.name_or_path} has no EOS token to end documents with",
                             where="model.name_or_path", fix="use a causal LM tokenizer with an eos_token")
        if tokenizer.pad_token is None:  # generation pads prompts; the pad id is never a target
            tokenizer.pad_token = tokenizer.eos_token
        super().bind_tokenizer(tokenizer)

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        return [{"text": line, "predict": True} for line in lines]

    # ---- features: packed blocks ----------------------------------------------------------------------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        limit, eos = self.cfg.max_length, tokenizer.eos_token_id
        encoded = self.encode(examples, tokenizer)["input_ids"]
        if examples and examples[0].get("predict"):  # prompts to continue: one feature each, the end kept
            return [{"input_ids": ids[-limit:], "prompt_ids": ids[-limit:], "example": i, "length": len(ids[-limit:])}
                    for i, ids in enumerate(encoded)]
        features, ids, starts, example = [], [], [], 0
        for i, doc in enumerate(encoded):
            doc = doc + [eos] if not doc or doc[-1] != eos else doc
            while doc:
                if not ids:
                    example = i
                room = limit - len(ids)
                starts.append(len(ids))
                ids, doc = ids + doc[:room], doc[room:]
                if len(ids) == limit:
                    features.append({"input_ids": ids, "starts": starts, "example": example, "length": limit})
                    ids, starts = [], []
        if ids:
            features.append({"input_ids": ids, "starts": starts, "example": example, "length": len(ids)})
        return features

    def collate(self, features: list[dict]) -> dict:
        if "starts" not in features[0]:  # predict: prompts only
            ids = torch.tensor(pad([f["input_ids"] for f in features], self.pad_id))
            return {"inputs": {"input_ids": ids}, "targets": {}, "tokens": sum(f["length"] for f in features),
                    "prompts": [f["prompt_ids"] for f in features]}
        from transformers import DataCollatorWithFlattening

        flatten = DataCollatorWithFlattening(return_tensors="np")
        rows = []
        for f in features:
            bounds = [*f["starts"], f["length"]]
            rows.append(flatten([{"input_ids": f["input_ids"][a:b]} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]))
        width = max(f["length"] for f in features)
        ids, labels, positions = [], [], []
        for row in rows:  # padding: its own piece (positions from 0), never a target
            n = row["input_ids"].shape[1]
            ids.append(row["input_ids"][0].tolist() + [self.pad_id] * (width - n))
            labels.append(row["labels"][0].tolist() + [-100] * (width - n))
            positions.append(row["position_ids"][0].tolist() + list(range(width - n)))
        return {"inputs": {"input_ids": torch.tensor(ids), "position_ids": torch.tensor(positions)},
                "targets": {"labels": torch.tensor(labels)}, "tokens": sum(f["length"] for f in features)}

    # ---- loss, generation, metrics --------------------------------------------------------------------
    def forward(self, model: Any, batch: dict) -> tuple[Any, torch.Tensor, torch.Tensor]:
        batch["evaluating"] = not model.training
        outputs = model(**batch["inputs"])
        return outputs, *self.loss(outputs, batch)

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["targets"]["labels"][:, 1:]  # token t is predicted from the tokens before it
        keep = labels != -100
        logits = outputs.logits[:, :-1][keep].float()  # only the targets go through the softmax
        nll = F.cross_entropy(logits, labels[keep], reduction="none")
        if batch.get("evaluating"):
            per_token = torch.zeros(labels.shape, device=nll.device)
            per_token[keep] = nll.detach()
            right = torch.zeros(labels.shape, dtype=torch.bool, device=nll.device)
            right[keep] = logits.detach().argmax(-1) == labels[keep]
            batch["row_sums"] = row_sums(per_token, right, keep)
        return nll.sum(), keep.sum()

    def generate(self, model: Any, batch: dict) -> list[str | None]:
        prompts = batch.get("prompts")
        if prompts is None:  # evaluation batches: nothing to generate
            return [None] * batch["targets"]["labels"].shape[0]
        return G.generate_replies(model, self.tokenizer, prompts, self.cfg.generation)

    def decode(self, outputs: Any, batch: dict) -> list[Any]:
        if batch.get("row_sums") is not None:
            return batch["row_sums"]
        return [{"text": text} for text in batch["generated"]]

    def format_predictions(self, predictions: list[dict], features: list[dict], examples: list[dict]) -> list[dict]:
        return [{"continuation": p.get("text")} for p in predictions]
