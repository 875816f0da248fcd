"""Preference optimisation of causal LMs on (prompt, chosen, rejected) pairs: DPO, IPO, ORPO, SimPO.

An example is {"messages": <the prompt turns>, "chosen", "rejected", "where"}. Each reply is rendered after
the prompt with the chat template and trained on its own tokens (its end-of-turn marker included), exactly
like sft's last assistant turn (the shared chat_data module). Chosen and rejected rows of a batch go
through the model in one forward pass (the engine's `forward` hook); the losses are in preference_losses.py.

The reference of sigmoid and ipo is the PEFT base model with the adapter disabled, or, for full
fine-tuning, the base model's log-probabilities computed once before training (`prepare`) and cached on
disk next to the features. ORPO and SimPO need no reference. Loss per pair; metrics: rewards, margin, accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import DpoDataConfig, GenerationConfig
from ftune.data.batching import pad
from ftune.data.readers import DataErrors
from ftune.errors import FtuneError
from ftune.tasks import chat_data as C
from ftune.tasks.preference_losses import DEFAULT_BETA, preference_loss, sequence_logps
from ftune.tasks.sft import SftTask

log = logging.getLogger("ftune")
STATS = ("loss", "chosen", "rejected", "logp_chosen", "logp_rejected")


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


@registry.task("dpo", DpoTaskConfig)
class DpoTask(SftTask):
    name = "dpo"
    main_metric, greater_is_better = "loss", False

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        # loss, beta, label_smoothing and select are bounded by the schema (DpoTaskConfig) at composition
        self.beta = cfg.beta if cfg.beta is not None else DEFAULT_BETA[cfg.loss]
        if cfg.label_smoothing and cfg.loss != "sigmoid":  # only the sigmoid loss smooths (preference_losses.py)
            raise FtuneError(f"task.loss={cfg.loss} does not use label smoothing, got {cfg.label_smoothing}",
                             where="task.label_smoothing", fix="set task.label_smoothing=0, or use task.loss=sigmoid")
        if cfg.select == "reward_accuracy":
            self.main_metric, self.greater_is_better = "reward_accuracy", True
        self.uses_reference = cfg.loss in ("sigmoid", "ipo")
        self.reference: dict[str, tuple[float, float]] = {}  # pair key → reference (chosen, rejected), full FT
        self._reference_model = None

    # ---- data ---------------------------------------------------------------------------------------
    def _iter_examples(self, rows, source: str, need_reply: bool):
        """Pairs, streamed like sft's conversations (problems reported with file:line once the part read ends)."""
        errors, data = DataErrors(source), self.cfg.data
        fix = (f"each line needs a prompt (`{data.prompt_field}`, `{data.messages_field}`, Alpaca `instruction` or "
               f"ShareGPT `{data.conversations_field}`) and `{data.chosen_field}` and `{data.rejected_field}` replies")
        try:
            for row in rows:
                try:
                    yield self._pair(row)
                except ValueError as error:
                    errors.add(row.get("where", "input"), str(error))
        except GeneratorExit:  # closed early (a max_train limit)
            errors.raise_if_any(fix=fix)
            raise
        errors.raise_if_any(fix=fix)

    def _pair(self, row: dict) -> dict:
        data = self.cfg.data
        prompt = C.read_row(row, data, need_reply=False)
        if "text" in prompt:
            raise ValueError(f"a `{data.text_field}` row has no prompt to prefer replies to")
        messages = prompt["messages"]
        if messages[-1]["role"] == "assistant":
            raise ValueError("the prompt ends with an assistant turn (the replies are `chosen` and `rejected`)")
        replies = {side: _reply(row, field) for side, field in
                   (("chosen", data.chosen_field), ("rejected", data.rejected_field))}
        return {"messages": messages, **replies, "where": row.get("where", "")}

    # ---- features -------------------------------------------------------------------------------------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features, encoded, lost = [], [], 0
        for i, example in enumerate(examples):
            if "chosen" not in example:  # predict: a prompt to answer
                ids = self.prompt_ids(example["messages"])
                features.append({"input_ids": ids, "prompt_ids": ids, "example": i, "length": len(ids)})
                continue
            pair = [C.encode_chat(tokenizer, [*example["messages"], {"role": "assistant", "content": example[side]}],
                                  self.cfg.max_length, last_turn=True) for side in ("chosen", "rejected")]
            encoded += pair
            if any(all(label == -100 for label in p["labels"]) for p in pair):
                lost += 1  # a reply cut away entirely: the pair cannot be compared
                continue
            (c, r) = pair
            key = hashlib.sha1(json.dumps([c["input_ids"], c["labels"], r["input_ids"], r["labels"]]).encode())
            features.append({"chosen_ids": c["input_ids"], "chosen_labels": c["labels"], "rejected_ids": r["input_ids"],
                             "rejected_labels": r["labels"], "example": i, "key": key.hexdigest()[:24],
                             "length": len(c["input_ids"]) + len(r["input_ids"])})
        cut = sum(p["cut"] for p in encoded)
        if cut:
            log.warning("%d of %d replies (with their prompt) are longer than task.max_length=%d tokens and were cut",
                        cut, len(encoded), self.cfg.max_length)
        C.check_trained(encoded, len(examples), tokenizer)
        if lost:
            log.warning("%d pair(s) dropped: a reply has no token left within task.max_length", lost)
        return features

    def collate(self, features: list[dict]) -> dict:
        if "chosen_ids" not in features[0]:
            return super().collate(features)  # predict: prompts to generate from
        rows = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
        labels = [f["chosen_labels"] for f in features] + [f["rejected_labels"] for f in features]
        mask = torch.tensor(pad([[1] * len(r) for r in rows], 0))
        return {"inputs": {"input_ids": torch.tensor(pad(rows, self.pad_id)), "attention_mask": mask},
                "targets": {"labels": torch.tensor(pad(labels, -100))}, "tokens": int(mask.sum()),
                "keys": [f["key"] for f in features]}

    # ---- the forward hook and the reference -------------------------------------------------------------
    def forward(self, model: Any, batch: dict) -> tuple[None, torch.Tensor, torch.Tensor]:
        """Chosen and rejected rows in one pass; the per-pair statistics stay in the batch for decode (which
        receives no outputs)."""
        logps, counts = sequence_logps(model(**batch["inputs"]).logits, batch["targets"]["labels"])
        n = len(batch["keys"])
        reference = self.reference_logps(model, batch) if self.uses_reference else None
        losses, reward_c, reward_r = preference_loss(self.cfg.loss, self.beta, logps[:n], logps[n:], counts[:n],
                                                     counts[n:], reference, self.cfg.label_smoothing,
                                                     self.cfg.simpo_gamma)
        batch["pairs"] = torch.stack([losses, reward_c, reward_r, logps[:n], logps[n:]], 1).detach()
        return None, losses.sum(), torch.tensor(n, device=losses.device)

    def reference_logps(self, model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed reference log-probabilities of the batch's chosen and rejected replies (never a gradient)."""
        n, base = len(batch["keys"]), getattr(model, "module", model)  # the model inside DDP
        if hasattr(base, "disable_adapter"):  # PEFT: the reference is the base model, adapter switched off
            was_training = base.training
            base.eval()  # no dropout, no NEFTune noise in the reference
            try:
                with torch.no_grad(), base.disable_adapter():
                    logps, _ = sequence_logps(base(**batch["inputs"]).logits, batch["targets"]["labels"])
            finally:
                base.train(was_training)
            return logps[:n], logps[n:]
        if any(key not in self.reference for key in batch["keys"]):  # eval of a full run: the reference model
            with _run_precision(batch["targets"]["labels"].device):  # as the policy's pass, or Δ starts off zero
                self._store_reference(self._load_reference(), [batch], batch["targets"]["labels"].device)
        values = torch.tensor([self.reference[key] for key in batch["keys"]], device=batch["targets"]["labels"].device)
        return values[:, 0], values[:, 1]

    def prepare(self, model: Any, features: dict[str, list[dict]], base_path: str, accelerator: Any) -> None:
        """Full fine-tuning with a reference: the base model's log-probabilities of every pair, computed now
        (before any step, under the run's precision) or read from the on-disk cache of an earlier run."""
        if not self.uses_reference or hasattr(model, "disable_adapter"):
            return
        from ftune.models import locate

        # configs/task/dpo.yaml defaults reference_model to ${model.name_or_path}: config.yaml records it for eval
        reference_path = str(locate(self.cfg.reference_model)) if self.cfg.reference_model else str(base_path)
        pairs = [f for split in features.values() for f in split if "key" in f]
        digest = hashlib.sha256(json.dumps([_model_identity(reference_path), accelerator.mixed_precision,
                                            sorted(f["key"] for f in pairs)]).encode()).hexdigest()[:32]
        from ftune.data.cache import cache_dir

        path = cache_dir() / f"dpo-reference-{digest}.json"
        if path.is_file():
            self.reference.update({k: tuple(v) for k, v in json.loads(path.read_text()).items()})
            log.info("reference log-probabilities of %d pairs loaded from the cache (%s)", len(pairs), path)
            return
        reference = model if model is not None and reference_path == str(base_path) else self._load_reference(reference_path)
        batches = [self.collate(pairs[i:i + 8]) for i in range(0, len(pairs), 8)]
        with accelerator.autocast():
            self._store_reference(reference, batches, accelerator.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({k: self.reference[k] for k in (f["key"] for f in pairs)}))
        tmp.replace(path)
        log.info("reference log-probabilities of %d pairs computed (%s)", len(pairs), path)

    def _store_reference(self, model: Any, batches: list[dict], device: torch.device) -> None:
        was_training = model.training
        model.eval().to(device)
        with torch.no_grad():
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
                logps, _ = sequence_logps(model(**inputs).logits, batch["targets"]["labels"].to(device))
                n = len(batch["keys"])
                for key, c, r in zip(batch["keys"], logps[:n].tolist(), logps[n:].tolist(), strict=True):
                    self.reference[key] = (c, r)
        model.train(was_training)

    def _load_reference(self, path: str | None = None):
        if self._reference_model is None:
            path = path or self.cfg.reference_model
            if not path:
                raise FtuneError("the reference log-probabilities of this full fine-tuning run are not known here",
                                 where="task.reference_model", fix="set task.reference_model=<the base model folder>")
            from transformers import AutoModelForCausalLM

            from ftune.models import load_pretrained, locate

            self._reference_model = load_pretrained(AutoModelForCausalLM, locate(path)).eval()
            self._reference_model.requires_grad_(False)
        return self._reference_model

    # ---- evaluation -----------------------------------------------------------------------------------
    def generate(self, model: Any, batch: dict) -> list[str | None]:
        if "keys" in batch:  # preference pairs: scored, not generated
            return [None] * len(batch["keys"])
        return super().generate(model, batch)

    def decode(self, outputs: Any, batch: dict) -> list[dict]:
        if "pairs" not in batch:
            return super().decode(outputs, batch)
        return [dict(zip(STATS, row, strict=True)) for row in batch["pairs"].float().cpu().tolist()]

    # Metrics are means of per-pair statistics: sums added pair by pair in split order, one evaluation chunk
    # at a time (Engine.evaluate), identical to one sum() over the whole split.
    def metric_state(self) -> dict:
        return {"sums": dict.fromkeys(METRIC_SUMS, 0), "pairs": 0}

    def update_metrics(self, state: dict, predictions: list[dict], features, examples, first: int = 0) -> None:
        sums = state["sums"]
        for p in predictions:
            for name, value in zip(METRIC_SUMS, _pair_stats(p), strict=True):
                sums[name] += value
        state["pairs"] += len(predictions)

    def final_metrics(self, state: dict) -> dict:
        n = max(state["pairs"], 1)
        # logp_accuracy: the policy alone prefers the chosen reply (summed log-probabilities; no reference)
        return {**{name: total / n for name, total in state["sums"].items()}, "pairs": state["pairs"]}


METRIC_SUMS = ("loss", "reward_accuracy", "reward_margin", "rewards_chosen", "rewards_rejected", "logps_chosen",
               "logps_rejected", "logp_accuracy")


def _pair_stats(p: dict) -> tuple:
    return (p["loss"], float(p["chosen"] > p["rejected"]), p["chosen"] - p["rejected"], p["chosen"], p["rejected"],
            p["logp_chosen"], p["logp_rejected"], float(p["logp_chosen"] > p["logp_rejected"]))


def _run_precision(device: torch.device):
    """The autocast of the run's accelerator (which wraps the policy's forward): bf16/fp16 or none."""
    import contextlib

    from accelerate.state import AcceleratorState

    try:
        mixed = AcceleratorState().mixed_precision
    except Exception:  # no accelerator in this process (a notebook): full precision
        mixed = "no"
    if mixed not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if mixed == "bf16" else torch.float16)


def _reply(row: dict, field: str) -> str:
    """A reply: a string, or a list holding one assistant message (TRL's conversational format)."""
    value = row.get(field)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
        value = value[0].get("content")
    if not isinstance(value, str):
        raise ValueError(f"`{field}` must be a string (or a list with one assistant message)")
    return value


def _model_identity(name_or_path: str) -> list:
    """A model folder's name and its weight files' sizes and times: a changed model misses the cache."""
    folder = Path(name_or_path)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    return [str(folder.resolve()) if folder.exists() else name_or_path,
            [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]]
