"""KTO (Ethayarajh et al. 2024): a causal LM learns from unpaired feedback, each completion marked desirable
or undesirable, with no second reply to compare it to.

An example is {"messages": <the prompt turns>, "completion", "desirable", "where"}, read from
{"prompt", "completion", "label": true|false} or any chat form of sft/dpo (a conversation ending with the
assistant's turn: that turn is the completion). With r = log π(y|x) − log ref(y|x) (summed over the
completion's tokens, its end-of-turn marker included) and z the reference point, the per-example loss is
λ_D·(1 − σ(β(r − z))) for a desirable and λ_U·(1 − σ(β(z − r))) for an undesirable completion.

z estimates KL(π‖ref) as TRL does: the batch mean of log π − log ref on mismatched pairs (each prompt with the
completion of the next example of its split, fixed when features are made), clamped at 0, no gradient. The
completions and the mismatched rows go through the model in one pass. The reference is handled exactly as
dpo's (ftune/tasks/dpo.py, whose machinery this task inherits): the base model with the adapter disabled under
PEFT, or, for full fine-tuning, the base model's log-probabilities of every row computed once before training
and cached on disk. Metrics: loss, mean rewards β·r of desirable and undesirable completions, their gap, z.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, section
from ftune.config.tasks import GenerationConfig, SftDataConfig
from ftune.data.readers import DataErrors
from ftune.tasks import chat_data as C
from ftune.tasks.dpo import DpoTask, _reply
from ftune.tasks.preference_losses import kto_kl, kto_loss, sequence_logps
from ftune.tasks.sft import SftTask


@dataclass
class KtoDataConfig(SftDataConfig):
    """JSONL: a prompt in any sft chat format + `completion` + `label` (true: desirable), or a conversation
    ending with the assistant's turn + `label`."""

    completion_field: str = MISSING
    label_field: str = MISSING


@dataclass
class KtoTaskConfig:
    name: str = MISSING
    data: KtoDataConfig = section(KtoDataConfig)
    beta: float = bounded(gt=0)  # β: how far the policy may move from the reference (TRL: 0.1)
    desirable_weight: float = bounded(gt=0)  # λ_D; with imbalanced data, λ_D·n_D/(λ_U·n_U) in [1, 4/3] (the paper)
    undesirable_weight: float = bounded(gt=0)  # λ_U
    reference_model: str | None = MISSING  # full fine-tuning: the reference (the YAML default: ${model.name_or_path})
    max_length: int = bounded(ge=8)
    chat_template: str | None = MISSING
    neftune_alpha: float | None = bounded(gt=0)
    generation: GenerationConfig = section(GenerationConfig)


@registry.task("kto", KtoTaskConfig)
class KtoTask(DpoTask):
    name = "kto"
    main_metric, greater_is_better = "loss", False

    def __init__(self, cfg: Any):
        SftTask.__init__(self, cfg)  # not DpoTask's: its loss settings are dpo's own
        self.beta, self.uses_reference = cfg.beta, True
        self.reference: dict[str, tuple[float, float]] = {}  # key → reference (completion, mismatched), full FT
        self._reference_model = None

    # ---- data ---------------------------------------------------------------------------------------
    def _iter_examples(self, rows, source: str, need_reply: bool):
        errors, d = DataErrors(source), self.cfg.data
        fix = (f"each line needs a prompt (`{d.prompt_field}`, `{d.messages_field}`, Alpaca `instruction` or ShareGPT "
               f"`{d.conversations_field}`), a `{d.completion_field}` (or a conversation ending with the assistant's "
               f"turn) and `{d.label_field}`: true (desirable) or false (undesirable)")
        try:
            for row in rows:
                try:
                    yield self._pair(row)
                except ValueError as error:
                    errors.add(row.get("where", "input"), str(error))
        except GeneratorExit:
            errors.raise_if_any(fix=fix)
            raise
        errors.raise_if_any(fix=fix)

    def _pair(self, row: dict) -> dict:
        d = self.cfg.data
        label = row.get(d.label_field)
        if label in (0, 1) and not isinstance(label, bool):
            label = bool(label)
        if not isinstance(label, bool):
            raise ValueError(f"`{d.label_field}` must be true (desirable) or false (undesirable), got "
                             f"{json.dumps(label)}")
        prompt = C.read_row({k: v for k, v in row.items() if k != d.completion_field}, d, need_reply=False)
        if "text" in prompt:
            raise ValueError(f"a `{d.text_field}` row has no prompt")
        messages = prompt["messages"]
        if d.completion_field in row:
            completion = _reply(row, d.completion_field)
        elif messages[-1]["role"] == "assistant":
            messages, completion = messages[:-1], messages[-1]["content"]
        else:
            raise ValueError(f"no `{d.completion_field}` and no assistant turn at the end of the conversation")
        if not messages or messages[-1]["role"] == "assistant":
            raise ValueError("the prompt ends with an assistant turn (the reply is the completion)")
        return {"messages": messages, "completion": completion, "desirable": label, "where": row.get("where", "")}

    # ---- features: each completion and a mismatched one (this prompt, the next example's completion) ------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features, encoded = [], []
        examples = examples if isinstance(examples, list) else list(examples)
        for i, example in enumerate(examples):
            if "completion" not in example:  # predict: a prompt to answer
                ids = self.prompt_ids(example["messages"])
                features.append({"input_ids": ids, "prompt_ids": ids, "example": i, "length": len(ids)})
                continue
            other = examples[(i + 1) % len(examples)]["completion"]
            rows = [C.encode_chat(tokenizer, [*example["messages"], {"role": "assistant", "content": reply}],
                                  self.cfg.max_length, last_turn=True) for reply in (example["completion"], other)]
            encoded.append(rows[0])
            if any(all(label == -100 for label in r["labels"]) for r in rows):
                continue  # a completion cut away entirely
            (c, k) = rows
            key = hashlib.sha1(json.dumps([c["input_ids"], c["labels"], k["input_ids"], k["labels"]]).encode())
            features.append({"chosen_ids": c["input_ids"], "chosen_labels": c["labels"], "rejected_ids": k["input_ids"],
                             "rejected_labels": k["labels"], "desirable": example["desirable"], "example": i,
                             "key": key.hexdigest()[:24], "length": len(c["input_ids"]) + len(k["input_ids"])})
        C.check_trained(encoded, len(examples), tokenizer)
        return features

    def collate(self, features: list[dict]) -> dict:
        batch = super().collate(features)  # completions ("chosen" rows), then the mismatched ("rejected") rows
        if "keys" in batch:
            batch["targets"]["desirable"] = torch.tensor([f["desirable"] for f in features])
        return batch

    def forward(self, model: Any, batch: dict) -> tuple[None, torch.Tensor, torch.Tensor]:
        logps, _ = sequence_logps(model(**batch["inputs"]).logits, batch["targets"]["labels"])
        n = len(batch["keys"])
        ref, ref_mismatched = self.reference_logps(model, batch)
        kl = kto_kl(logps[n:].detach(), ref_mismatched)
        logratios = logps[:n] - ref
        losses = kto_loss(logratios, batch["targets"]["desirable"], kl, self.beta, self.cfg.desirable_weight,
                          self.cfg.undesirable_weight)
        desirable = batch["targets"]["desirable"].float()
        batch["pairs"] = torch.stack([losses, self.beta * logratios, desirable, kl.expand(n), logps[:n]], 1).detach()
        return None, losses.sum(), torch.tensor(n, device=losses.device)

    def decode(self, outputs: Any, batch: dict) -> list[dict]:
        if "pairs" not in batch:
            return super().decode(outputs, batch)
        return [dict(zip(("loss", "reward", "desirable", "kl", "logp"), row, strict=True))
                for row in batch["pairs"].float().cpu().tolist()]

    def metric_state(self) -> dict:
        return {"loss": 0.0, "kl": 0.0, "n": 0, "good": 0, "bad": 0, "reward_good": 0.0, "reward_bad": 0.0}

    def update_metrics(self, state: dict, predictions: list[dict], features, examples, first: int = 0) -> None:
        for p in predictions:
            side = "good" if p["desirable"] else "bad"
            state["n"] += 1
            state[side] += 1
            state[f"reward_{side}"] += p["reward"]
            state["loss"] += p["loss"]
            state["kl"] += p["kl"]

    def final_metrics(self, state: dict) -> dict:
        n = max(state["n"], 1)
        good = state["reward_good"] / max(state["good"], 1)
        bad = state["reward_bad"] / max(state["bad"], 1)
        return {"loss": state["loss"] / n, "rewards_desirable": good, "rewards_undesirable": bad,
                "reward_margin": good - bad, "kl": state["kl"] / n, "desirable": state["good"],
                "undesirable": state["bad"]}

