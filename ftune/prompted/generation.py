"""Generate and parse, for the task families without a fixed answer set: ner (`type: span` lines, read back
into word tags) and qa (a span of the context). Every item gets a prediction: an output that cannot be read
is counted (`unparseable`) and predicts nothing, so it scores as a miss, never as a dropped item. The
predictions are then handed to the task's own metric stream, in the shape its decode step gives."""

from __future__ import annotations

import math
import re

import torch

from ftune.prompted.prompts import NONE

LINE = re.compile(r"^\s*[-*•]?\s*([A-Za-z][\w-]*)\s*:\s*(.+?)\s*$")


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy replies to token-id prompts, left-padded in batches; cut at the first blank line."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, i in enumerate(chunk):
            ids[b, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[b, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad)
        for b, i in enumerate(chunk):
            text = tokenizer.decode(out[b, width:], skip_special_tokens=True)
            texts[i] = text.split("\n\n")[0].strip()
    return texts


def parse_entities(text: str, tokens: list[str], types: list[str]) -> tuple[list[tuple[str, int, int]], bool]:
    """(entities as (type, first word, last word), readable): lines `type: span`, or `none`. A span is matched
    against the sentence's words (the first unused occurrence); lines that do not read, with an unknown type or
    a span not in the sentence, make the output unreadable (the spans that did read are kept)."""
    if text.strip().lower().strip(".` ") in (NONE, "no entities", ""):
        return [], text.strip() != ""
    known = {t.lower(): t for t in types}
    found, used, readable = [], set(), True
    for line in filter(str.strip, text.splitlines()):
        match = LINE.match(line)
        kind = known.get(match.group(1).lower()) if match else None
        if kind is None:
            readable = False
            continue
        words = match.group(2).strip("`\"' ").split()
        hit = next((i for i in range(len(tokens) - len(words) + 1)
                    if tokens[i:i + len(words)] == words and not used & set(range(i, i + len(words)))), None)
        if not words or hit is None:
            readable = False
            continue
        used |= set(range(hit, hit + len(words)))
        found.append((kind, hit, hit + len(words) - 1))
    return found, readable


def entity_predictions(found: list[tuple[str, int, int]], label_ids: dict[str, int]) -> list[tuple[int, int, float]]:
    """(word, label id, confidence) triples as the ner task decodes them, in the task's own tag scheme."""
    triples = []
    for kind, first, last in found:
        for word in range(first, last + 1):
            single, begin, end = first == last, word == first, word == last
            names = ([f"S-{kind}"] if single else []) + ([f"B-{kind}"] if begin else []) + \
                ([f"E-{kind}"] if end and not single else []) + [f"I-{kind}"]
            tag = next((name for name in names if name in label_ids), None)
            if tag is not None:
                triples.append((word, label_ids[tag], 1.0))
    return triples


def answer_prediction(text: str, context: str, version_2: bool) -> tuple[tuple, dict, bool]:
    """(prediction, feature, readable) in the qa task's decode shape: the reply found in the context (case
    folded) is a one-token window over that span; `unanswerable` (SQuAD 2.0) is the null answer; anything
    else is unreadable and predicts the empty answer."""
    reply = text.strip().strip("\"'`").rstrip(".").strip()
    if version_2 and reply.lower() in ("unanswerable", "none", ""):
        return (0.0, [], []), {"offsets": [(0, 0)]}, True
    at = context.lower().find(reply.lower()) if reply else -1
    if at < 0:
        return (0.0, [], []), {"offsets": [(0, 0)]}, False
    return (-math.inf, [(0, 0.0)], [(0, 0.0)]), {"offsets": [(at, at + len(reply))]}, True
