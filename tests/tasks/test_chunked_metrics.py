"""Metrics counted chunk by chunk (as Engine.evaluate feeds them) equal the whole-split ones to the last bit, for
every task family, and equal the digests recorded with the list-based code before streaming (issue 13, commit
167c785), on the same generated predictions."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import torch
from omegaconf import OmegaConf

from ftune.registry import defaults as group_defaults
from ftune.tasks.qa import QaTask
from tests.data.test_streaming import QA_CONTEXT, WORDS, make

OLD = {  # sha256 of the whole-split metrics, recorded with the list-based code
    "sequence_metrics": "8a9d9d231bd5dea77d4ec0a4039e8e08538df57195f16539deb02da23531ac73",
    "qa_metrics": "381a20658a5a67fb28fd0c75f09b3737669471191e5fa0d145ff8cf603d01d33",
    "sft_metrics": "5a42e3ac721670aaa8816b8bead7e3055a07df76e4b8e459a442369a98c6da55",
    "seq2seq_rouge": "7dc45115f8382cb5404fb5a1ad690e91072c4cccc92f7d32a8b3ffe8108171cd",
    "seq2seq_bleu": "a5b12e4edb393cb5e6bbd4c9bd042819188fdfaec0c283e1068687f6805e75d1",
}


def metric_cases(seed: int = 0):
    """(task, labels, examples, features, predictions) with random gold and predicted values."""
    rng = random.Random(seed)
    cases = []
    for name in ("classification", "pair_classification", "relation", "regression", "multilabel"):
        for _ in range(4):
            labels = ["no_relation", "a", "b", "c"][: rng.randint(2, 4)] if name != "regression" else ["score"]
            exs, predictions = [], []
            for i in range(rng.randint(1, 60)):
                if name == "regression":
                    gold = rng.choice([0.0, 1.0, 2.5, rng.uniform(-3, 3)])
                    guess = rng.choice([gold, rng.uniform(-3, 3), 1.0])
                elif name == "multilabel":
                    gold = rng.sample(labels, rng.randint(0, len(labels)))
                    guess = [rng.random() for _ in labels]
                else:
                    gold = rng.choice(labels[: rng.randint(1, len(labels))])
                    best = rng.randrange(len(labels))
                    guess = (best, [1.0 if j == best else 0.0 for j in range(len(labels))])
                exs.append({"label": gold, "where": f"f:{i}"})
                predictions.append(guess)
            cases.append((name, labels, exs, [{"example": i} for i in range(len(exs))], predictions))
    return cases


def counted(task, predictions, features, exs, size: int) -> dict:
    """Metrics fed `size` examples at a time, as Engine.evaluate does (features of a chunk's examples)."""
    state = task.metric_state()
    owners = [f["example"] for f in features]
    for first in range(0, len(exs), size):
        last = min(first + size, len(exs))
        picked = [i for i, owner in enumerate(owners) if first <= owner < last]
        task.update_metrics(state, [predictions[i] for i in picked], [features[i] for i in picked],
                            exs[first:last], first)
    return task.final_metrics(state)


def test_sequence_metrics_counted_over_any_chunking_equal_the_old_ones():
    old = hashlib.sha256()
    for name, labels, exs, features, predictions in metric_cases():
        task = make(name)
        task.labels = labels
        whole = task.compute_metrics(predictions, features, exs)
        old.update(json.dumps(whole, sort_keys=True).encode())
        for size in (1, 7, 1000):
            assert counted(task, predictions, features, exs, size) == whole, (name, size)
    assert old.hexdigest() == OLD["sequence_metrics"]


def qa_examples(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    spans = ["Denver Broncos", "Carolina Panthers", "Santa Clara", "February 7 , 2016", "third", ""]
    out = []
    for i in range(40):
        answer = rng.choice(spans)
        answers = [{"text": answer, "start": QA_CONTEXT.index(answer)}] if answer else []
        out.append({"id": str(i), "question": rng.choice(["Who won?", "Where was it?", "When?", "What title?"]),
                    "context": QA_CONTEXT, "answers": answers, "impossible": not answers, "where": f"f:{i}"})
    return out


def test_qa_metrics_counted_over_any_chunking_equal_the_old_ones(tokenizer):
    old = hashlib.sha256()
    for v2 in (False, True):
        task = QaTask(OmegaConf.merge(group_defaults("task", "qa"),
                                      {"max_length": 24, "doc_stride": 8, "version_2": v2}))
        exs = qa_examples()
        features = task.featurize(exs, tokenizer)
        assert len(features) > 3 * len(exs)  # several windows per question
        generator, predictions = torch.Generator().manual_seed(0), []
        for i in range(0, len(features), 16):
            batch = task.collate(features[i:i + 16])
            shape = batch["inputs"]["input_ids"].shape

            class Out:
                start_logits, end_logits = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)

            predictions += task.decode(Out, batch)
        whole = task.compute_metrics(predictions, features, exs)
        old.update(json.dumps(whole, sort_keys=True).encode())
        for size in (1, 3, 1000):
            assert counted(task, predictions, features, exs, size) == whole
    assert old.hexdigest() == OLD["qa_metrics"]


def test_sft_metrics_counted_over_any_chunking_equal_the_old_ones():
    from ftune.tasks.sft import SftTask

    rng = random.Random(2)
    task = SftTask(OmegaConf.merge(group_defaults("task", "sft"), {"eval_generate": True}))
    exs, predictions = [], []
    for i in range(30):
        reply = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
        if i % 5 == 4:
            exs.append({"text": reply, "where": f"f:{i}"})  # plain text: perplexity only
        else:
            exs.append({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": reply}],
                        **({"answers": [reply, "the film"]} if i % 3 == 0 else {}), "where": f"f:{i}"})
        predictions.append({"text": rng.choice([reply, " ".join(rng.choices(WORDS, k=3)), None]),
                            "nll": rng.uniform(0, 9), "tokens": rng.randint(1, 20)})
    features = [{"example": i} for i in range(len(exs))]
    whole = task.compute_metrics(predictions, features, exs)
    assert set(whole) >= {"loss", "exact_match", "token_f1", "rougeL"}
    assert hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest() == OLD["sft_metrics"], whole
    for size in (1, 4, 1000):
        assert counted(task, predictions, features, exs, size) == whole


@pytest.mark.parametrize("metrics", ["rouge", "bleu"])
def test_seq2seq_metrics_counted_over_any_chunking_equal_the_old_ones(metrics, tokenizer):
    from ftune.tasks.seq2seq import Seq2seqTask

    rng = random.Random(4)
    task = Seq2seqTask(OmegaConf.merge(group_defaults("task", "seq2seq"), {"metrics": metrics}))
    task.tokenizer = tokenizer
    exs = [{"source": "s", "target": " ".join(rng.choices(WORDS, k=rng.randint(2, 9))), "where": f"f:{i}"}
           for i in range(25)]
    predictions = [rng.choice([ex["target"], " ".join(rng.choices(WORDS, k=4)), ""]) for ex in exs]
    features = [{"example": i} for i in range(len(exs))]
    whole = task.compute_metrics(predictions, features, exs)
    assert hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest() == OLD[f"seq2seq_{metrics}"], whole
    for size in (1, 6, 1000):
        assert counted(task, predictions, features, exs, size) == whole
