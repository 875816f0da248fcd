"""Shared fixtures: a tiny random BERT with its own vocab, small NER files, and config composition."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO = REPO / "ftune" / "demo_data" / "ner"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The feature cache of the test session lives in its own folder, not in the user's ~/.cache.
os.environ.setdefault("FTUNE_CACHE_DIR", tempfile.mkdtemp(prefix="ftune-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def head_of_conll(source: Path, target: Path, sentences: int) -> Path:
    """The first `sentences` sentences of a CoNLL file (keeps tests fast and independent of file size)."""
    blocks = [b for b in source.read_text().split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
    target.write_text("\n\n".join(blocks[:sentences]) + "\n")
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and a word-level vocab built from the demo data."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({line.split()[0].lower() for line in (DEMO / "train.conll").read_text().splitlines()
                    if line.strip() and not line.startswith("-DOCSTART-")})
    pieces = ["##s", "##ed", "##ing", "##a", "##e", "##i", "##o", "##n", "##r", "##t"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *list("abcdefghijklmnopqrstuvwxyz"), *pieces, *words]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "vocab.txt").unlink()  # tokenizer.json is the tokenizer; keep the folder like a hub model
    return folder


@pytest.fixture(scope="session")
def tiny_ner_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ner-data")
    return {"train": head_of_conll(DEMO / "train.conll", folder / "train.conll", 96),
            "validation": head_of_conll(DEMO / "validation.conll", folder / "validation.conll", 48),
            "test": head_of_conll(DEMO / "test.conll", folder / "test.conll", 32)}


@pytest.fixture(scope="session")
def compose_config():
    """compose(name, overrides) → a DictConfig, through the same config tree the CLI uses."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ftune.config import register_configs

    register_configs()

    def _compose(name: str, overrides: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_module("ftune.configs", version_base="1.3"):
            return compose(name, overrides=overrides)

    return _compose


@pytest.fixture
def tiny_train_overrides(tiny_model_dir, tiny_ner_data, tmp_path) -> list[str]:
    """Overrides for a fast, deterministic run of the tiny model on the small NER files."""
    return [
        f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
        f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}",
        f"task.data.test={tiny_ner_data['test']}",
        "trainer.epochs=2", "trainer.batch_size=16", "trainer.eval_batch_size=32", "optimizer.lr=1e-3",
        "logger.console=none", f"run_dir={tmp_path / 'run'}",
    ]
