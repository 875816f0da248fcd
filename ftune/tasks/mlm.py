"""Masked-language-model pretraining of encoders on raw text (continued / task-adaptive pretraining).

Documents (ftune/tasks/text_corpus.py) are tokenised with their special tokens, concatenated and cut into
blocks of `max_length` tokens, as transformers' run_mlm.py groups texts (a block may span documents; the
last block of each featurised chunk may be shorter: every token is kept once). Masking is dynamic, drawn
anew for every batch by transformers' `DataCollatorForLanguageModeling.torch_mask_tokens`: `mlm_probability`
of the non-special tokens become targets, of which `mask_replace_prob` are replaced by the mask token and
`random_replace_prob` by a random token (15 %, 80/10/10 by default). With `whole_word_mask` the collator
masks every token of a chosen word; it finds words from the tokens' character offsets (stored with the
features), and it then always uses the mask token (transformers 5 sets mask_replace_prob=1 for it).

Training draws masks from the global RNG (seeded by trainer.seed); evaluation draws them from a generator
seeded by the batch itself, so every evaluation of a split masks the same tokens and the metrics compare.
Metrics: masked-token loss, perplexity (exp of the loss) and accuracy. best/ is an AutoModelForMaskedLM
folder that a classification or NER run loads with `init_from=<this run>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, section
from ftune.data.batching import pad
from ftune.errors import FtuneError
from ftune.tasks.text_corpus import CorpusTask, TextDataConfig, row_sums

MASK = "[MASK]"  # in `predict` lines: the tokenizer's own mask token too (<mask> for RoBERTa)
TOP_K = 5


@dataclass
class MlmTaskConfig:
    name: str = MISSING
    data: TextDataConfig = section(TextDataConfig)
    max_length: int = bounded(ge=8)  # tokens per packed block
    mlm_probability: float = bounded(gt=0, lt=1)  # share of the (non-special) tokens that become targets
    mask_replace_prob: float = bounded(ge=0, le=1)  # of the targets: replaced by the mask token
    random_replace_prob: float = bounded(ge=0, le=1)  # of the targets: replaced by a random token
    whole_word_mask: bool = MISSING  # mask whole words (always with the mask token)


@registry.task("mlm", MlmTaskConfig)
class MlmTask(CorpusTask):
    name = "mlm"
    pipeline_tag = "fill-mask"
    auto_class = "AutoModelForMaskedLM"
    example_input = f"Paris is the {MASK} of France ."
    card_usage = ("text = f'Paris is the {tokenizer.mask_token} of France .'",
                  "inputs = tokenizer(text, return_tensors='pt')",
                  "at = (inputs['input_ids'][0] == tokenizer.mask_token_id).nonzero()[0, 0]",
                  "print(tokenizer.decode(model(**inputs).logits[0, at].argmax()))")

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if cfg.mask_replace_prob + cfg.random_replace_prob > 1:
            raise FtuneError(f"task.mask_replace_prob + task.random_replace_prob = "
                             f"{cfg.mask_replace_prob + cfg.random_replace_prob:g} exceeds 1", where="task",
                             fix="e.g. 0.8 and 0.1 (BERT's 80/10/10)")

    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForMaskedLM

        from ftune.models import load_pretrained

        return load_pretrained(AutoModelForMaskedLM, name_or_path, **kwargs)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        if tokenizer.mask_token is None:
            raise FtuneError(f"the tokenizer of {tokenizer.name_or_path} has no mask token", where="task",
                             fix="masked-LM pretraining is for encoders (BERT, RoBERTa, MiniLM); use task=clm for "
                                 "causal LMs")
        super().bind_tokenizer(tokenizer)
        self.specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        return [{"text": line, "predict": True} for line in lines]

    # ---- features: packed blocks ----------------------------------------------------------------------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        limit, wwm = self.cfg.max_length, bool(self.cfg.whole_word_mask)
        if examples and examples[0].get("predict"):  # fill-mask lines: one feature each
            texts = [{"text": e["text"].replace(MASK, tokenizer.mask_token)} for e in examples]
            ids = self.encode(texts, tokenizer)["input_ids"]
            return [{"input_ids": row[:limit], "example": i, "length": min(len(row), limit), "fill": 1}
                    for i, row in enumerate(ids)]
        encoded = self.encode(examples, tokenizer, return_offsets_mapping=wwm)
        features, block = [], _Block()
        for i, row in enumerate(encoded["input_ids"]):
            offsets = encoded["offset_mapping"][i] if wwm else None
            for j, token in enumerate(row):
                if not block.ids:
                    block.example = i
                block.ids.append(token)
                if wwm:
                    block.starts.append(offsets[j][0])
                    block.ends.append(offsets[j][1])
                if len(block.ids) == limit:
                    features.append(block.feature(wwm))
                    block = _Block()
        if block.ids:
            features.append(block.feature(wwm))
        return features

    def collate(self, features: list[dict]) -> dict:
        ids = torch.tensor(pad([f["input_ids"] for f in features], self.pad_id))
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        special = (torch.isin(ids, self.specials) | (mask == 0)).int()  # never masked: specials and padding
        batch = {"inputs": {"input_ids": ids, "attention_mask": mask}, "tokens": int(mask.sum()), "ids": ids,
                 "special": special, "targets": {} if "fill" in features[0] else {"special": special}}
        if "starts" in features[0]:
            batch["offsets"] = torch.stack([torch.tensor(pad([f["starts"] for f in features], 0)),
                                            torch.tensor(pad([f["ends"] for f in features], 0))], dim=-1)
        return batch

    # ---- masking, loss --------------------------------------------------------------------------------
    def collator(self):
        from transformers import DataCollatorForLanguageModeling

        wwm = bool(self.cfg.whole_word_mask)
        return DataCollatorForLanguageModeling(
            self.tokenizer, mlm=True, mlm_probability=self.cfg.mlm_probability, whole_word_mask=wwm,
            mask_replace_prob=1.0 if wwm else self.cfg.mask_replace_prob,
            random_replace_prob=0.0 if wwm else self.cfg.random_replace_prob)

    def mask(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input ids, labels: -100 except at the targets) of a collated batch, on the host."""
        collator = self.collator()
        collator.generator = generator
        return collator.torch_mask_tokens(batch["ids"].clone(), special_tokens_mask=batch["special"],
                                          offset_mapping=batch.get("offsets"))

    def forward(self, model: Any, batch: dict) -> tuple[Any, torch.Tensor, torch.Tensor]:
        generator = None
        if not model.training:  # evaluation: the same masks at every evaluation of the split
            ids = batch["ids"]
            generator = torch.Generator().manual_seed(int(ids.sum()) * 1_000_003 + ids.numel())
        ids, labels = self.mask(batch, generator)
        device = batch["inputs"]["attention_mask"].device
        outputs = model(**{**batch["inputs"], "input_ids": ids.to(device)})
        batch["labels"], batch["evaluating"] = labels.to(device), not model.training
        return outputs, *self.loss(outputs, batch)

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        keep = labels != -100
        logits = outputs.logits[keep].float()  # only the targets go through the softmax
        nll = F.cross_entropy(logits, labels[keep], reduction="none")
        per_token = torch.zeros(labels.shape, device=nll.device)
        per_token[keep] = nll.detach()
        right = torch.zeros(labels.shape, dtype=torch.bool, device=nll.device)
        right[keep] = logits.detach().argmax(-1) == labels[keep]
        batch["row_sums"] = row_sums(per_token, right, keep) if batch.get("evaluating") else None
        return nll.sum(), keep.sum()

    def decode(self, outputs: Any, batch: dict) -> list[Any]:
        if batch.get("row_sums") is not None:
            return batch["row_sums"]
        mask_id, results = self.tokenizer.mask_token_id, []
        for row, ids in enumerate(batch["ids"].tolist()):
            fills = []
            for at in [j for j, token in enumerate(ids) if token == mask_id]:
                scores, tokens = outputs.logits[row, at].float().softmax(-1).topk(TOP_K)
                fills.append([{"token": self.tokenizer.decode([t]).strip(), "score": round(float(s), 4)}
                              for s, t in zip(scores.tolist(), tokens.tolist(), strict=True)])
            results.append({"fills": fills})
        return results

    def format_predictions(self, predictions: list[dict], features: list[dict], examples: list[dict]) -> list[dict]:
        return [{"fills": p.get("fills", [])} for p in predictions]


class _Block:
    """A packed block being filled: token ids (and character offsets for whole-word masking)."""

    def __init__(self):
        self.ids, self.starts, self.ends, self.example = [], [], [], 0

    def feature(self, offsets: bool) -> dict:
        feature = {"input_ids": self.ids, "example": self.example, "length": len(self.ids)}
        if offsets:
            feature.update(starts=self.starts, ends=self.ends)
        return feature
