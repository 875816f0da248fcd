"""The prompts of a prompted evaluation: an instruction, k shots from the training split and one item, as plain
text or through the tokenizer's chat template, cut into the part every item shares (instruction and shots:
the prefix, computed once) and the item's own part; and what a shot's answer is in each task family.

Families are the task's `prompting` fact (ftune/tasks/base.py): "choice" (classification: a verbalizer per
label), "entities" (ner: `type: span` lines) and "answer" (qa: a span of the context).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ftune.errors import FtuneError

# family -> (instruction, template); {labels} / {types} list the choices, the template names the item's fields
DEFAULTS = {
    "choice": ("Classify the text. Answer with one of: {labels}.", "Text: {text}\nAnswer:"),
    "choice_pair": ("Classify the pair of texts. Answer with one of: {labels}.",
                    "Text 1: {text}\nText 2: {text_pair}\nAnswer:"),
    "entities": ("List the named entities in the text, one per line as `type: span` with a type from: {types}. "
                 "Answer `none` when there is none.", "Text: {text}\nEntities:"),
    "answer": ("Answer the question with a short span copied from the context.",
               "Context: {context}\nQuestion: {question}\nAnswer:"),
}
NONE = "none"  # the entities answer of a text without entities


def entity_types(labels: list[str]) -> list[str]:
    return sorted({label.split("-", 1)[1] for label in labels if "-" in label})


def entity_lines(example: dict) -> str:
    """The gold answer of a NER shot: one `type: span` line per entity, or `none`."""
    from ftune.tasks.tag_schemes import entities

    found = [f"{kind}: {' '.join(example['tokens'][a:b + 1])}" for kind, a, b in entities(example["tags"])]
    return "\n".join(found) or NONE


@dataclass
class Rendered:
    prefix: str  # instruction and shots: the same for every item that shares these shots
    item: str  # the evaluated item up to where the answer starts
    separator: str  # put before an answer: " " after a plain-text template, "" in a chat's assistant turn
    chat: bool


class Prompter:
    """Renders prompts for one task family with the prompt config (`prompt.*`)."""

    def __init__(self, cfg: Any, family: str, labels: list[str], pair: bool, tokenizer: Any):
        self.cfg, self.family, self.labels = cfg, family, labels
        key = "choice_pair" if family == "choice" and pair else family
        instruction, template = DEFAULTS[key]
        self.template = cfg.template if cfg.template is not None else template
        self.verbalizers = verbalizers(cfg.verbalizers, labels) if family == "choice" else {}
        choices = ", ".join(self.verbalizers.values())
        self.instruction = (cfg.instruction if cfg.instruction is not None else instruction).replace(
            "{labels}", choices).replace("{types}", ", ".join(entity_types(labels)))
        chat = str(cfg.chat).lower()
        if chat not in ("auto", "true", "false"):
            raise FtuneError(f"prompt.chat must be auto, true or false, not `{cfg.chat}`", where="prompt.chat")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat == "true" and not has_template:
            raise FtuneError("the tokenizer has no chat template", where="prompt.chat", fix="use prompt.chat=false")
        self.chat = has_template if chat == "auto" else chat == "true"
        self.tokenizer = tokenizer

    def fields(self, example: dict) -> str:
        values = dict(example)
        if self.family == "entities":
            values["text"] = " ".join(example["tokens"])
        try:
            return self.template.format(**values)
        except (KeyError, IndexError) as error:
            raise FtuneError(f"prompt.template names {error}, which the examples do not have", where="prompt.template",
                             fix="use {text} (classification; {text_pair} for pairs, ner), {question} and {context} (qa)"
                             ) from None

    def answer(self, example: dict) -> str:
        """A shot's gold answer."""
        if self.family == "choice":
            return self.verbalizers[example["label"]]
        if self.family == "entities":
            return entity_lines(example)
        answers = [a["text"] for a in example.get("answers") or [] if a["text"]]
        return answers[0] if answers else "unanswerable"

    def render(self, shots: list[dict], item: dict) -> Rendered:
        if not self.chat:
            prefix = self.instruction + "\n\n" + "".join(f"{self.fields(s)} {self.answer(s)}\n\n" for s in shots)
            return Rendered(prefix, self.fields(item), " ", False)
        messages = [{"role": "system", "content": self.instruction}]
        for shot in shots:
            messages += [{"role": "user", "content": self.fields(shot)}, {"role": "assistant", "content": self.answer(shot)}]
        prefix = self.tokenizer.apply_chat_template(messages, tokenize=False)
        full = self.tokenizer.apply_chat_template([*messages, {"role": "user", "content": self.fields(item)}],
                                                  tokenize=False, add_generation_prompt=True)
        if not full.startswith(prefix):  # a template that rewrites earlier turns: nothing is shared
            return Rendered("", full, "", True)
        return Rendered(prefix, full[len(prefix):], "", True)


def verbalizers(given: Any, labels: list[str]) -> dict[str, str]:
    """label -> word: the given ones (keys are label names), every other label by its own name."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(given) if OmegaConf.is_config(given) else (given or {})
    if not isinstance(given, dict):
        raise FtuneError("prompt.verbalizers must be a mapping {label: word}", where="prompt.verbalizers",
                         fix="e.g. prompt.verbalizers='{\"0\": negative, \"1\": positive}'")
    given = {str(k): str(v) for k, v in given.items()}
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise FtuneError(f"prompt.verbalizers names label `{unknown[0]}`, which is not a label",
                         where="prompt.verbalizers", fix=f"labels: {', '.join(labels)[:200]}")
    words = {label: given.get(label, label) for label in labels}
    if len(set(words.values())) < len(words):
        raise FtuneError("two labels have the same verbalizer", where="prompt.verbalizers",
                         fix="give each label its own word")
    return words


class Shots:
    """k examples of the training split, drawn once with `seed`: balanced over labels (round robin over the
    labels, each label's examples in a seeded random order), then shuffled. `for_item` gives the same shots to
    every item, except that an item which is itself a shot gets the next unused example of the same label in
    its place: an evaluated item is never among its own shots."""

    def __init__(self, train: Any, k: int, seed: int, family: str):
        self.family, self.k = family, k
        if k == 0:
            self.chosen, self.spare = [], {}
            return
        if not train:
            raise FtuneError(f"prompt.shots={k} needs a training split to draw from", where="task.data.train",
                             fix="set task.data.train, or use prompt=zero_shot")
        rng = random.Random(seed)
        rows = [dict(ex) for ex in train]
        pools: dict[Any, list[int]] = defaultdict(list)
        for index, ex in enumerate(rows):
            pools[ex["label"] if family == "choice" else None].append(index)
        order = sorted(pools, key=str)
        for group in order:
            rng.shuffle(pools[group])
        picked: list[int] = []
        while len(picked) < min(k, len(rows)):
            for group in order:
                if pools[group] and len(picked) < k:
                    picked.append(pools[group].pop())
        rng.shuffle(picked)
        self.chosen = [rows[i] for i in picked]
        self.spare = {group: [rows[i] for i in reversed(pool[-64:])] for group, pool in pools.items()}

    def key(self, example: dict) -> tuple:
        if self.family == "entities":
            return tuple(example["tokens"])
        if self.family == "answer":
            return example["question"], example["context"]
        return example["text"], example.get("text_pair")

    def describe(self, example: dict) -> str:
        """A shot as the metrics file lists it: its text (ner: its words; qa: its question)."""
        key = self.key(example)
        return " ".join(key) if self.family == "entities" else str(key[0])

    def for_item(self, item: dict) -> list[dict]:
        own = self.key(item)
        if not any(self.key(shot) == own for shot in self.chosen):
            return self.chosen
        shots = []
        for shot in self.chosen:
            if self.key(shot) == own:
                group = shot["label"] if self.family == "choice" else None
                spare = [s for s in self.spare.get(group, []) if self.key(s) != own and s not in self.chosen]
                if not spare:
                    continue  # nothing else of this label: one shot fewer for this item
                shot = spare[0]
            shots.append(shot)
        return shots
