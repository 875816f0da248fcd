"""task=mlm: reading raw text (txt lines / blank-line blocks, jsonl, globs, a validation split held out by
document), packing (every token once), dynamic masking statistics (rate, 80/10/10, specials never masked,
whole words together) and evaluation masks that repeat."""

import pytest
import torch

from ftune.errors import FtuneError
from ftune.registry import build_task
from ftune.registry import defaults as group_defaults
from tests.conftest import write_data

WORDS = "the cat sat on the mat a dog ran in the park hello how are you today paris is the capital".split()


def make(name="mlm", **task):
    cfg = group_defaults("task", name)
    for key, value in task.items():
        node, *path = key.split("__")
        target = cfg
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    return build_task(cfg)


def test_txt_lines_blocks_jsonl_globs_and_held_out_documents(tmp_path):
    write_data(tmp_path / "a.txt", "first doc\n\nsecond doc\nstill second\n")
    write_data(tmp_path / "b.txt", "third\n")
    write_data(tmp_path / "c.jsonl", [{"text": "json doc"}, {"text": ""}, {"body": "x", "text": "other"}])
    task = make(data__train=str(tmp_path / "a.txt"), data__validation_fraction=0.0)
    assert [d["text"] for d in task.load_split("train")] == ["first doc", "second doc", "still second"]
    assert task.load_split("train")[0]["where"].endswith("a.txt:1")
    task = make(data__train=str(tmp_path / "a.txt"), data__documents="blank_lines", data__validation_fraction=0.0)
    docs = task.load_split("train")
    assert [d["text"] for d in docs] == ["first doc", "second doc\nstill second"] and docs[1]["where"].endswith(":3")
    task = make(data__train=f"{tmp_path}/*.txt,{tmp_path / 'c.jsonl'}", data__validation_fraction=0.0)
    assert [d["text"] for d in task.load_split("train")] == ["first doc", "second doc", "still second", "third",
                                                             "json doc", "other"]
    # no validation file: the last documents are held out, whole, and not trained on
    task = make(data__train=f"{tmp_path}/*.txt,{tmp_path / 'c.jsonl'}", data__validation_fraction=0.34)
    train, validation = task.load_split("train"), task.load_split("validation")
    assert [d["text"] for d in validation] == ["json doc", "other"] and len(train) == 4
    write_data(tmp_path / "labelled.tsv", "sentence\tlabel\na fine film\t1\na dull one\t0\n")  # TAPT: text only
    task = make(data__train=str(tmp_path / "labelled.tsv"), data__text_field="sentence", data__validation_fraction=0.0)
    assert [d["text"] for d in task.load_split("train")] == ["a fine film", "a dull one"]
    with pytest.raises(FtuneError, match="no file matches"):
        make(data__train=str(tmp_path / "*.md")).load_split("train")
    write_data(tmp_path / "bad.jsonl", [{"text": 3}])
    with pytest.raises(FtuneError, match=r"bad.jsonl:1: no string `text`"):
        make(data__train=str(tmp_path / "bad.jsonl")).load_split("train")


def test_packing_keeps_every_token_once(tokenizer):
    task = make(max_length=16)
    docs = [{"text": " ".join(WORDS[i % 7:i % 7 + 3 + i % 11])} for i in range(40)]
    features = task.featurize(docs, tokenizer)
    encoded = tokenizer([d["text"] for d in docs])["input_ids"]
    flat = [t for f in features for t in f["input_ids"]]
    assert flat == [t for ids in encoded for t in ids]
    assert all(f["length"] == 16 for f in features[:-1]) and 0 < features[-1]["length"] <= 16
    # a block's example is the document its first token comes from
    starts = [sum(len(ids) for ids in encoded[:i]) for i in range(len(docs))]
    for n, f in enumerate(features):
        assert f["example"] == max(i for i, s in enumerate(starts) if s <= n * 16)


def _batch(task, tokenizer, rows=64, length=64):
    docs = [{"text": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12))} for i in range(rows * 6)]
    return task.collate(task.featurize(docs, tokenizer)[:rows])


def test_masking_rate_replacements_and_specials(tokenizer):
    task = make(max_length=64)
    task.bind_tokenizer(tokenizer)
    batch = _batch(task, tokenizer)
    torch.manual_seed(0)
    ids, labels = task.mask(batch)
    target = labels != -100
    special = batch["special"].bool()
    assert not (target & special).any()  # [CLS], [SEP] and padding are never targets
    assert torch.equal(labels[target], batch["ids"][target])  # labels are the original tokens
    rate = target.sum() / (~special).sum()
    assert 0.13 < rate < 0.17, rate
    masked = (ids == tokenizer.mask_token_id) & target
    unchanged = (ids == batch["ids"]) & target
    assert 0.76 < masked.sum() / target.sum() < 0.84
    assert 0.07 < unchanged.sum() / target.sum() < 0.14  # 10 % kept (+ random picks of the same token)
    assert torch.equal(ids[~target], batch["ids"][~target])  # non-targets untouched
    torch.manual_seed(1)
    assert not torch.equal(task.mask(batch)[1], labels)  # dynamic: another draw, other targets


def test_whole_word_masking_masks_words_together(tokenizer):
    task = make(max_length=64, whole_word_mask=True)
    task.bind_tokenizer(tokenizer)
    docs = [{"text": "cats sitting jumped " * 4 + "parked"} for _ in range(40)]  # words of several pieces
    batch = task.collate(task.featurize(docs, tokenizer))
    assert "offsets" in batch
    torch.manual_seed(0)
    ids, labels = task.mask(batch)
    target = labels != -100
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in batch["ids"].tolist()]
    groups = 0
    for row, pieces in enumerate(tokens):
        word = []
        for j, piece in enumerate(pieces + ["[END]"]):
            if not piece.startswith("##"):
                if len(word) > 1:
                    states = {bool(target[row, k]) for k in word}
                    groups += 1
                    assert len(states) == 1, (pieces, word)  # all pieces of a word, or none
                word = [j]
            else:
                word.append(j)
    assert groups > 50 and target.any()
    assert torch.equal(ids[target], torch.full_like(ids[target], tokenizer.mask_token_id))  # mask token only


def test_evaluation_masks_repeat_and_loss_is_over_targets(tokenizer, tiny_model_dir):
    task = make(max_length=32)
    task.bind_tokenizer(tokenizer)
    model = task.build_model(str(tiny_model_dir)).eval()
    batch = _batch(task, tokenizer, rows=8, length=32)
    with torch.no_grad():
        _, first, n_first = task.forward(model, dict(batch))
        _, second, n_second = task.forward(model, dict(batch))
    assert torch.equal(first, second) and int(n_first) == int(n_second) > 0
    sums = task.decode(None, {**batch, "row_sums": None, **_evaluated(task, model, batch)})
    assert sum(r["tokens"] for r in sums) == int(n_first)
    metrics = task.compute_metrics(sums, [], [])
    assert metrics["loss"] == pytest.approx(float(first) / int(n_first), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(torch.exp(first / n_first).item(), rel=1e-4)


def _evaluated(task, model, batch):
    batch = dict(batch)
    with torch.no_grad():
        task.forward(model, batch)
    return {"row_sums": batch["row_sums"]}


def test_mask_probabilities_over_one_are_refused():
    from ftune.tasks.mlm import MlmTask

    cfg = group_defaults("task", "mlm")
    cfg.mask_replace_prob, cfg.random_replace_prob = 0.9, 0.2
    with pytest.raises(FtuneError, match="exceeds 1"):
        MlmTask.validate(cfg)
