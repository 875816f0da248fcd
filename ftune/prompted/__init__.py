"""Prompted evaluation of a causal LM on a task's own data (`ftune eval model=<LM or run> task=<task>
prompt=zero_shot|few_shot`), in the metrics of a fine-tuned run: the task fits its labels on the training
split as in training, and the predictions go through the task's own metric stream.

    prompts.py     instruction, template, chat template, verbalizers, the seeded balanced shots
    scoring.py     log-likelihood of each verbalizer after the prompt (lm-evaluation-harness's multiple choice),
                   batched, the shared prefix (instruction + shots) computed once
    generation.py  ner and qa: greedy generation, parsed; unreadable outputs counted, never dropped
    lm.py          the causal LM: a model folder, a preset (model=smollm2-135m) or an sft run
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune.errors import FtuneError
from ftune.prompted import generation, lm, prompts, scoring

log = logging.getLogger("ftune")


def evaluate(cfg: DictConfig) -> tuple[Any, dict, str, Path]:
    """(task, metrics, split name, model folder) of a prompted evaluation; the caller prints and writes them."""
    from ftune.data import sources
    from ftune.registry import build_task

    p = cfg.prompt
    if cfg.get("task") is None or OmegaConf.select(cfg, "task.name") is None:
        raise FtuneError("a prompted evaluation needs the task whose data it scores", where="task",
                         fix="add task=sst2 (or another classification task, ner, qa)")
    task = build_task(cfg.task)
    if task.prompting is None:
        raise FtuneError(f"task={task.name} cannot be evaluated by prompting", where="prompt",
                         fix="prompt a classification, pair_classification, ner or qa task")
    train = task.load_split("train")
    if cfg.file:
        examples, name = sources.load_path(cfg.file, "file", task.iter_file), Path(cfg.file).stem
    else:
        examples, name = task.load_split(cfg.split), cfg.split
    if not examples:
        raise FtuneError(f"no examples to evaluate in split `{cfg.split}`", where="split",
                         fix="pick a configured split, or pass file=<data file>")
    task.fit_labels(train, {})  # labels, tag scheme, SQuAD 2.0: as training would fit them
    task.check_examples(examples, name)
    items = [dict(examples[i]) for i in range(min(len(examples), p.limit or len(examples)))]
    model, tokenizer, folder = lm.load(cfg)
    prompter = prompts.Prompter(p, task.prompting, list(task.labels), bool(getattr(task, "pair", False)), tokenizer)
    shots = prompts.Shots(train, p.shots, p.seed, task.prompting)
    limit = p.max_length or lm.position_limit(model)
    started = time.perf_counter()
    if task.prompting == "choice":
        predictions, extra = _choose(model, tokenizer, prompter, shots, items, p, limit)
    else:
        predictions, extra = _generate(model, tokenizer, prompter, shots, items, p, limit, task)
    seconds = time.perf_counter() - started
    own = extra.pop("features", None) or [{}] * len(items)  # qa: the answer's span in the context
    features = [{"example": i, **own[i]} for i in range(len(items))]
    state = task.metric_state()
    task.update_metrics(state, predictions, features, items)
    metrics = task.final_metrics(state)
    metrics["prompt"] = {**OmegaConf.to_container(p), "chat": prompter.chat, "items": len(items),
                         "seconds": round(seconds, 2), "items_per_second": round(len(items) / seconds, 2),
                         "shots_used": [shots.describe(s) for s in shots.chosen], **extra}
    log.info("prompted %s: %d items in %.1f s (%.2f items/s)", name, len(items), seconds, len(items) / seconds)
    return task, metrics, name, folder


def _check_length(length: int, limit: int, shots: int) -> None:
    if length > limit:
        raise FtuneError(f"a prompt is {length} tokens, over the limit of {limit}", where="prompt.shots",
                         fix=f"use fewer shots than prompt.shots={shots}, a shorter template, or raise "
                             "prompt.max_length (up to the model's position limit)")


def _encode_prefix(tokenizer, rendered: prompts.Rendered) -> tuple[int, ...]:
    return tuple(tokenizer(rendered.prefix, add_special_tokens=not rendered.chat)["input_ids"]) if rendered.prefix \
        else ()


def _choose(model, tokenizer, prompter, shots, items, p, limit) -> tuple[list, dict]:
    """(best label, probabilities) per item: the verbalizers' (normalised) log-likelihoods, softmaxed."""
    import torch

    labels = list(prompter.verbalizers)
    words = [prompter.verbalizers[label] for label in labels]
    requests, prefixes = [], {}
    for item in items:
        rendered = prompter.render(shots.for_item(item), item)
        key = rendered.prefix
        if key not in prefixes:
            prefixes[key] = _encode_prefix(tokenizer, rendered)
        for word in words:
            context, continuation = scoring.encode_pair(tokenizer, rendered.item, rendered.separator + word)
            _check_length(len(prefixes[key]) + len(context) + len(continuation), limit, p.shots)
            requests.append(scoring.Request(prefixes[key], context, continuation))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = scoring.Scorer(model, pad, p.shared_prefix).score(requests, p.batch_size * len(words))
    norm = scoring.normalised(scores, words * len(items), [len(r.continuation) for r in requests], p.normalize)
    predictions = []
    for i in range(len(items)):
        row = torch.tensor(norm[i * len(words):(i + 1) * len(words)])
        probabilities = row.softmax(-1).tolist()
        predictions.append((int(row.argmax()), probabilities))
    return predictions, {"verbalizers": dict(zip(labels, words, strict=True)),
                         "prefix_tokens": max((len(v) for v in prefixes.values()), default=0)}


def _generate(model, tokenizer, prompter, shots, items, p, limit, task) -> tuple[list, dict]:
    prompts_ids = []
    for item in items:
        rendered = prompter.render(shots.for_item(item), item)
        ids = list(_encode_prefix(tokenizer, rendered)) + \
            tokenizer(rendered.item, add_special_tokens=False)["input_ids"]
        _check_length(len(ids) + p.max_new_tokens, limit, p.shots)
        prompts_ids.append(ids)
    texts = generation.generate(model, tokenizer, prompts_ids, p.max_new_tokens, p.batch_size)
    predictions, features, unreadable = [], [], 0
    for item, text in zip(items, texts, strict=True):
        if task.prompting == "entities":
            found, readable = generation.parse_entities(text, item["tokens"], prompts.entity_types(task.labels))
            predictions.append(generation.entity_predictions(found, {t: i for i, t in enumerate(task.labels)}))
            features.append({})
        else:
            prediction, feature, readable = generation.answer_prediction(text, item["context"], bool(task.version_2))
            predictions.append(prediction)
            features.append(feature)
        unreadable += not readable
    log.info("%d of %d output(s) could not be parsed; each counts as a wrong prediction", unreadable, len(items))
    return predictions, {"features": features, "unparseable": unreadable, "examples_of_outputs": texts[:3]}
