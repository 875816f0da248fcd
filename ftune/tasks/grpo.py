"""GRPO (Shao et al. 2024, DeepSeekMath): online RL of a causal LM with programmatic rewards.

Each training step samples `num_generations` completions per prompt from the policy itself (eval mode, no
gradient, the model's own `generate` with the task's `generation` settings and `temperature`), scores them with
the reward plug-ins of `task.rewards` (ftune/tasks/rewards.py; weighted sum), and turns the rewards into
group-normalised advantages A = (r − mean_group) / (std_group + 1e-4). The loss per completion token is
−min(ρA, clip(ρ, 1−ε, 1+ε_high)A) + β·KL, ρ = π/π_old, KL the k3 estimate against the reference; with one
update per generation (as TRL's default) π_old = π detached, so ρ = 1 and the gradient is A·∇log π. The
reference is the base model with the adapter disabled under PEFT, else `task.reference_model` loaded once.
The normalisation is `task.loss_type` (grpo, dr_grpo, dapo: preference_losses.grpo_reduce); the engine's
division of the summed loss by the summed targets over an optimizer step gives each one exactly.

Data: a prompt in any sft chat form plus reference answers (`answer`: a string or a list), or a conversation
ending with the assistant's turn (its content is the reference). Evaluation generates one reply per prompt
(greedy unless `generation.do_sample`) and reports the mean reward, exact match and token F1. Training logs
(the task/ figures of metrics.jsonl): reward mean and std, each reward, KL, completion length, the share of
groups whose rewards are all equal (zero advantage: they teach nothing).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import GenerationConfig, SftDataConfig
from ftune.data.batching import feature_column
from ftune.errors import FtuneError
from ftune.tasks import generation as G
from ftune.tasks import rewards as R
from ftune.tasks.preference_losses import group_advantages, grpo_reduce, grpo_token_loss
from ftune.tasks.sft import SftTask

log = logging.getLogger("ftune")


@dataclass
class GrpoDataConfig(SftDataConfig):
    answer_field: str = MISSING  # reference answer(s): a string or a list of strings


@dataclass
class RewardSettings:
    pattern: str | None = MISSING  # regex: a Python regular expression searched in the completion
    max_words: int = bounded(ge=1)  # length: completions longer than this are penalised
    reward_model: str | None = MISSING  # reward: a task=reward run's best/ folder
    max_length: int = bounded(ge=8)  # reward: tokens of prompt + completion it reads


@dataclass
class GrpoTaskConfig:
    name: str = MISSING
    data: GrpoDataConfig = section(GrpoDataConfig)
    rewards: list[str] = MISSING  # reward functions (registered plug-ins), e.g. [exact_match, length]
    reward_weights: list[float] | None = MISSING  # one per reward; null: 1 each
    reward_settings: RewardSettings = section(RewardSettings)
    num_generations: int = bounded(ge=2)  # G completions per prompt (the group)
    temperature: float = bounded(gt=0)  # sampling temperature in training
    loss_type: str = choice("dapo", "grpo", "dr_grpo")
    beta: float = bounded(ge=0)  # weight of the KL term (0: no reference pass)
    epsilon: float = bounded(gt=0, lt=1)  # clip range below (and above, unless epsilon_high)
    epsilon_high: float | None = bounded(gt=0)  # DAPO's clip-higher (the paper: 0.28); null: epsilon
    scale_rewards: bool = MISSING  # divide by the group's std (false: Dr. GRPO's unscaled advantages)
    reference_model: str | None = MISSING  # full fine-tuning and beta > 0: the reference (default: the base model)
    max_length: int = bounded(ge=8)  # prompt tokens (the most recent are kept)
    chat_template: str | None = MISSING
    generation: GenerationConfig = section(GenerationConfig)  # max_new_tokens: the completion length


@registry.task("grpo", GrpoTaskConfig)
class GrpoTask(SftTask):
    name = "grpo"
    main_metric, greater_is_better = "reward", True

    @classmethod
    def validate(cls, cfg: Any) -> None:
        for name in cfg.rewards:  # unknown name: did-you-mean, before any weights load
            registry.lookup(registry.REWARDS, name)
        if cfg.reward_weights is not None and len(cfg.reward_weights) != len(cfg.rewards):
            raise FtuneError(f"{len(cfg.reward_weights)} reward weight(s) for {len(cfg.rewards)} reward(s)",
                             where="task.reward_weights", fix="give one weight per entry of task.rewards, or null")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self._rewards: list | None = None
        self._reference_model = None
        self._stats: dict[str, float] = {}

    @property
    def rewards(self) -> list:
        if self._rewards is None:
            self._rewards = R.build(list(self.cfg.rewards), self.cfg.reward_weights, self.cfg.reward_settings)
        return self._rewards

    # ---- data: prompts with reference answers ----------------------------------------------------------
    def _iter_examples(self, rows, source: str, need_reply: bool):
        return super()._iter_examples((self._answered(row) for row in rows), source, need_reply=False)

    def _answered(self, row: dict) -> dict:
        """The row with its reference answers as `answers` (sft's reader keeps a list of strings there)."""
        answer = row.get(self.cfg.data.answer_field, row.get("answers"))
        messages = row.get(self.cfg.data.messages_field)
        if answer is None and isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                and messages[-1].get("role") == "assistant":
            answer = messages[-1].get("content")
        return {**row, "answers": [answer] if isinstance(answer, str) else answer}

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        super().fit_labels(train, others)
        for fn, _ in self.rewards:  # e.g. exact_match without reference answers: one line, exit 2
            fn.check(train)
            for split in others.values():
                fn.check(split)

    def check_examples(self, examples: list[dict], split: str) -> None:
        """`ftune eval`: the rewards must be able to score the file (exact_match: reference answers)."""
        for fn, _ in self.rewards:
            fn.check(examples if isinstance(examples, list) else list(examples))

    # ---- features: prompts (training: sampled from; evaluation and predict: answered) --------------------
    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        features = []
        for i, example in enumerate(examples):
            messages = example["messages"]
            if messages[-1]["role"] == "assistant":
                messages = messages[:max(j for j, m in enumerate(messages) if m["role"] != "assistant") + 1]
            ids = self.prompt_ids(messages)
            features.append({"input_ids": ids, "prompt_ids": ids, "example": i, "length": len(ids),
                             "answers": list(example.get("answers") or []),
                             "messages": json.dumps(messages)})
        return features

    def collate(self, features: list[dict]) -> dict:
        batch = super().collate(features)
        batch["answers"] = [list(f["answers"]) for f in features]
        batch["messages"] = [json.loads(f["messages"]) for f in features]
        return batch

    # ---- the training step: sample, score, advantages, clipped loss --------------------------------------
    def forward(self, model: Any, batch: dict) -> tuple[None, torch.Tensor, torch.Tensor]:
        base, group = getattr(model, "module", model), self.cfg.num_generations
        ids, mask, completion, done = self.sample(base, batch["prompts"], group)
        texts = [t.strip() for t in self.tokenizer.batch_decode(completion.masked_fill(done == 0, self.pad_id),
                                                                  skip_special_tokens=True)]
        examples = [{"messages": m, "answers": a} for m, a in zip(batch["messages"], batch["answers"], strict=True)
                    for _ in range(group)]
        scores = R.score(self.rewards, texts, examples)
        rewards = torch.tensor([sum(w * s[k] for (_, w), s in zip(self.rewards, scores, strict=True))
                                for k in range(len(texts))], device=ids.device)
        advantages, flat = group_advantages(rewards, group, self.cfg.scale_rewards)
        logps = token_logps(model, ids, mask, completion)
        reference = None
        if self.cfg.beta:
            with torch.no_grad():
                reference = self.reference_logps(base, ids, mask, completion)
        eps = self.cfg.epsilon
        token_loss, kl = grpo_token_loss(logps, logps.detach(), reference, advantages, eps,
                                         self.cfg.epsilon_high or eps, self.cfg.beta)
        done = done.to(token_loss.dtype)
        lengths = done.sum(1)
        self._add_stats({"reward": rewards.mean(), "reward_std": rewards.view(-1, group).std(1).mean(),
                         "completion_length": lengths.mean(), "zero_std_groups": flat.float().mean(),
                         **({"kl": ((kl * done).sum() / lengths.sum().clamp(min=1))} if kl is not None else {}),
                         **{f"reward_{self.cfg.rewards[j]}": sum(s) / len(s) for j, s in enumerate(scores)}})
        return None, *grpo_reduce(token_loss, done, self.cfg.loss_type, self.cfg.generation.max_new_tokens)

    def sample(self, base: Any, prompts: list[list[int]], group: int):
        """G sampled completions per prompt, prompt-major: (prompt+completion ids, their attention mask, the
        completion ids, the completion mask up to and including the first end-of-sequence token)."""
        width = max(len(p) for p in prompts)
        device = next(base.parameters()).device
        rows = [p for p in prompts for _ in range(group)]
        prompt_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in rows], device=device)
        prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], device=device)
        kwargs = {**G.generate_kwargs(self.cfg.generation, self.tokenizer), "do_sample": True, "num_beams": 1,
                  "temperature": self.cfg.temperature, "top_p": self.cfg.generation.top_p}
        kwargs.pop("length_penalty", None)
        was_training = base.training
        base.eval()  # no dropout while sampling
        try:
            with torch.no_grad():
                out = base.generate(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, **kwargs)
        finally:
            base.train(was_training)
        completion = out[:, width:]
        eos = self._eos_ids(base)
        is_eos = torch.isin(completion, torch.tensor(eos, device=device))
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion.shape[1])
        done = (torch.arange(completion.shape[1], device=device)[None] <= first[:, None]).long()
        return torch.cat([prompt_ids, completion], 1), torch.cat([prompt_mask, done], 1), completion, done

    def _eos_ids(self, base: Any) -> list[int]:
        found = getattr(getattr(base, "generation_config", None), "eos_token_id", None)
        found = found if isinstance(found, list) else [found] if found is not None else []
        return [*found, self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else found or [-1]

    def reference_logps(self, base: Any, ids: torch.Tensor, mask: torch.Tensor, completion: torch.Tensor):
        if hasattr(base, "disable_adapter"):  # PEFT: the base model is the reference, no second copy
            was_training = base.training
            base.eval()
            try:
                with base.disable_adapter():
                    return token_logps(base, ids, mask, completion)
            finally:
                base.train(was_training)
        if self._reference_model is None:
            from transformers import AutoModelForCausalLM

            from ftune.models import load_pretrained, locate

            if not self.cfg.reference_model:
                raise FtuneError("task.beta > 0 with full fine-tuning needs a reference model",
                                 where="task.reference_model", fix="set task.reference_model, or task.beta=0")
            self._reference_model = load_pretrained(AutoModelForCausalLM, locate(self.cfg.reference_model))
            self._reference_model.requires_grad_(False).eval()
        self._reference_model.to(ids.device)
        return token_logps(self._reference_model, ids, mask, completion)

    def _add_stats(self, values: dict) -> None:
        for key, value in values.items():
            self._stats[key] = self._stats.get(key, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
        self._stats["_n"] = self._stats.get("_n", 0.0) + 1

    def train_stats(self) -> dict:
        n, stats = self._stats.pop("_n", 0.0), self._stats
        self._stats = {}
        return {f"task/{k}": v / n for k, v in stats.items()} if n else {}

    # ---- evaluation: one reply per prompt, its reward, EM and token F1 -----------------------------------
    def generate(self, model: Any, batch: dict) -> list[str]:
        return G.generate_replies(model, self.tokenizer, batch["prompts"], self.cfg.generation)

    def metric_state(self) -> dict:
        return {"n": 0, "reward": 0.0, "em": 0.0, "f1": 0.0, "answered": 0}

    def update_metrics(self, state: dict, predictions: list[dict], features, examples, first: int = 0) -> None:
        examples = examples if isinstance(examples, list) else list(examples)
        texts = [p["text"] or "" for p in predictions]
        owners = [examples[i - first] for i in feature_column(features, "example").tolist()]
        scores = R.score(self.rewards, texts, owners)
        for k, (text, owner) in enumerate(zip(texts, owners, strict=True)):
            state["n"] += 1
            state["reward"] += sum(w * s[k] for (_, w), s in zip(self.rewards, scores, strict=True))
            if owner.get("answers"):
                state["em"], state["f1"] = G.exact_match_f1_sums([text], [list(owner["answers"])], state["em"], state["f1"])
                state["answered"] += 1

    def final_metrics(self, state: dict) -> dict:
        metrics = {"reward": state["reward"] / max(state["n"], 1), "prompts": state["n"]}
        if state["answered"]:
            metrics.update(exact_match=100 * state["em"] / state["answered"],
                           token_f1=100 * state["f1"] / state["answered"])
        return metrics


def token_logps(model: Any, ids: torch.Tensor, mask: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities of the completion tokens (only their logits are computed)."""
    length = completion.shape[1]
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=length + 1).logits[:, :-1]
    return logits.float().log_softmax(-1).gather(-1, completion[..., None])[..., 0]
