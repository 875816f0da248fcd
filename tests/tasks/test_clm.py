"""task=clm: documents + EOS packed into blocks (every token once), position ids restarting per document,
no target across a boundary, and the packed loss equal to the documents' losses run one by one; LoRA."""

import pytest
import torch
import torch.nn.functional as F

from ftune.registry import build_task
from ftune.registry import defaults as group_defaults

DOCS = ["the cat sat on the mat", "a dog ran in the park and then it ran home", "hello , how are you today ?",
        "Paris is the capital of France .", "what colour is the sky ? the sky is blue"]


@pytest.fixture(scope="module")
def setup(tiny_llama_dir):
    from transformers import AutoTokenizer

    cfg = group_defaults("task", "clm")
    cfg.max_length = 24
    task = build_task(cfg)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    task.bind_tokenizer(tokenizer)
    return task, tokenizer, tiny_llama_dir


def test_packing_keeps_every_token_once_and_resets_positions(setup):
    task, tokenizer, _ = setup
    features = task.featurize([{"text": d} for d in DOCS], tokenizer)
    docs = [ids + [tokenizer.eos_token_id] for ids in tokenizer(DOCS)["input_ids"]]
    assert [t for f in features for t in f["input_ids"]] == [t for d in docs for t in d]
    assert all(f["length"] == 24 for f in features[:-1])
    batch = task.collate(features)
    ids, positions, labels = batch["inputs"]["input_ids"], batch["inputs"]["position_ids"], batch["targets"]["labels"]
    assert "attention_mask" not in batch["inputs"]  # block-causal attention from the position ids
    # positions restart at every document start and where a document goes on in the next block
    boundaries, offset = set(), 0
    for d in docs:
        boundaries.add(offset)
        offset += len(d)
    for row, f in enumerate(features):
        first = row * 24
        expected, pos = [], 0
        for j in range(f["length"]):
            if first + j in boundaries or j == 0:
                pos = 0
            expected.append(pos)
            pos += 1
        assert positions[row, :f["length"]].tolist() == expected
        starts = [j for j, p in enumerate(expected) if p == 0]
        assert [j for j in range(f["length"]) if labels[row, j] == -100] == starts  # no target across a boundary
        keep = [j for j in range(f["length"]) if j not in starts]
        assert labels[row, keep].tolist() == ids[row, keep].tolist()
    assert (labels[-1, features[-1]["length"]:] == -100).all()  # padding is never a target


def test_packed_loss_equals_documents_run_one_by_one(setup):
    task, tokenizer, folder = setup
    task.cfg.max_length = 200  # every document in one block
    try:
        features = task.featurize([{"text": d} for d in DOCS], tokenizer)
    finally:
        task.cfg.max_length = 24
    assert len(features) == 1
    model = task.build_model(str(folder)).eval()
    batch = task.collate(features)
    with torch.no_grad():
        _, packed, targets = task.forward(model, batch)
        alone, count = 0.0, 0
        for ids in tokenizer(DOCS)["input_ids"]:
            ids = torch.tensor([ids + [tokenizer.eos_token_id]])
            logits = model(input_ids=ids).logits
            alone += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
            count += ids.shape[1] - 1
    assert int(targets) == count
    assert float(packed) == pytest.approx(float(alone), rel=1e-4)
    metrics = task.compute_metrics(task.decode(None, batch), [], [])
    assert metrics["loss"] == pytest.approx(float(alone) / count, rel=1e-4) and metrics["target_tokens"] == count


def test_lora_trains_on_packed_blocks(setup):
    from ftune import peft

    task, tokenizer, folder = setup
    model = peft.wrap(task.build_model(str(folder)), group_defaults("peft", "lora"), 10, [])
    batch = task.collate(task.featurize([{"text": d} for d in DOCS], tokenizer))
    model.train()
    _, loss, targets = task.forward(model, batch)
    (loss / targets).backward()
    trained = [p for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
