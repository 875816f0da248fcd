"""The reward functions of grpo: plug-ins that score generated completions, registered like any plug-in
(`@registry.reward_function("name")` on a class; out-of-tree ones through $FTUNE_PLUGINS or an entry point).

A reward class is built once per run with the task's `reward_settings` and called with a batch of completions
and the examples they answer ({"messages": the prompt, "answers": reference answers or absent}); it returns one
float per completion. `check(examples)` refuses data it cannot score, before any training.

    exact_match  1 when the completion equals a reference answer after SQuAD's normalisation, else 0
    token_f1     SQuAD's token F1 against the best reference (a denser signal than exact match)
    regex        1 when `reward_settings.pattern` is found in the completion (a format check), else 0
    length       0 up to `reward_settings.max_words` words, then −(words − max)/max: a penalty on rambling
    reward       the score of a trained reward model (a task=reward run: `reward_settings.reward_model`)

grpo adds them with `task.reward_weights` (default 1 each).
"""

from __future__ import annotations

import abc
import re
from typing import Any

from ftune import registry
from ftune.errors import FtuneError
from ftune.tasks import generation as G


class Reward(abc.ABC):
    def __init__(self, settings: Any):
        self.settings = settings

    def check(self, examples: list[dict]) -> None:
        """Refuse examples this reward cannot score (DataError naming the first one). Default: every example
        can be scored (a format or length check needs no reference)."""
        return None

    @abc.abstractmethod
    def __call__(self, completions: list[str], examples: list[dict]) -> list[float]:
        """One reward per completion (examples[i] holds completion i's prompt and references)."""


class _NeedsAnswers(Reward):
    def check(self, examples: list[dict]) -> None:
        missing = [ex.get("where") or f"example {i}" for i, ex in enumerate(examples) if not ex.get("answers")]
        if missing:
            raise FtuneError(f"{missing[0]}: no reference answer for reward `{self.name}` "
                            f"({len(missing)} of {len(examples)} prompts have none)",
                            where="task.data", fix="give each prompt an `answer` (or `answers` list) field, "
                            "or choose rewards that need none (task.rewards)")


@registry.reward_function("exact_match")
class ExactMatch(_NeedsAnswers):
    name = "exact_match"

    def __call__(self, completions: list[str], examples: list[dict]) -> list[float]:
        return [max(float(G.normalize_answer(c) == G.normalize_answer(a)) for a in ex["answers"])
                for c, ex in zip(completions, examples, strict=True)]


@registry.reward_function("token_f1")
class TokenF1(_NeedsAnswers):
    name = "token_f1"

    def __call__(self, completions: list[str], examples: list[dict]) -> list[float]:
        return [max(G.token_f1(c, a) for a in ex["answers"]) for c, ex in zip(completions, examples, strict=True)]


@registry.reward_function("regex")
class Regex(Reward):
    def __init__(self, settings: Any):
        super().__init__(settings)
        if not settings.pattern:
            raise FtuneError("reward `regex` needs a pattern", where="task.reward_settings.pattern",
                             fix="set task.reward_settings.pattern='<a Python regular expression>'")
        try:
            self.pattern = re.compile(settings.pattern)
        except re.error as error:
            raise FtuneError(f"bad regular expression: {error}", where="task.reward_settings.pattern") from error

    def __call__(self, completions: list[str], examples: list[dict]) -> list[float]:
        return [float(self.pattern.search(c) is not None) for c in completions]


@registry.reward_function("length")
class Length(Reward):
    def __call__(self, completions: list[str], examples: list[dict]) -> list[float]:
        most = self.settings.max_words
        return [-max(0, len(c.split()) - most) / most for c in completions]


@registry.reward_function("reward")
class RewardModel(Reward):
    """A task=reward run scores (prompt, completion); loaded once, run without gradients."""

    def __init__(self, settings: Any):
        super().__init__(settings)
        if not settings.reward_model:
            raise FtuneError("reward `reward` needs a trained reward model", where="task.reward_settings.reward_model",
                             fix="set task.reward_settings.reward_model=<a task=reward run's best/ folder>")
        self.model = self.tokenizer = None

    def __call__(self, completions: list[str], examples: list[dict]) -> list[float]:
        import torch

        from ftune.tasks.reward import score_texts

        if self.model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from ftune.models import load_pretrained, locate

            folder = locate(self.settings.reward_model)
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = load_pretrained(AutoModelForSequenceClassification, folder).eval()
        with torch.no_grad():
            return score_texts(self.model, self.tokenizer,
                               [(ex["messages"], c) for c, ex in zip(completions, examples, strict=True)],
                               self.settings.max_length)


def build(names: list[str], weights: list[float] | None, settings: Any) -> list[tuple[Reward, float]]:
    """The configured rewards and their weights (unknown name: did-you-mean, exit 2)."""
    if weights is not None and len(weights) != len(names):
        raise FtuneError(f"{len(weights)} reward weight(s) for {len(names)} reward(s)", where="task.reward_weights",
                         fix="give one weight per entry of task.rewards, or null (1 each)")
    if not names:
        raise FtuneError("no reward function", where="task.rewards", fix="e.g. task.rewards=[exact_match]")
    return [(registry.lookup(registry.REWARDS, name).target(settings), 1.0 if weights is None else float(w))
            for name, w in zip(names, weights or [None] * len(names), strict=True)]


def score(rewards: list[tuple[Reward, float]], completions: list[str], examples: list[dict]) -> list[list[float]]:
    """Each reward's scores (one list per reward, in order): their weighted sum is the completion's reward."""
    return [fn(completions, examples) for fn, _ in rewards]
