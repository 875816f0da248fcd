"""Shared fixtures, defined once for every area of tests/: one tiny random model per family built from a config
(encoder: `tiny_model_dir`, a BERT; causal: `tiny_llama_dir`; seq2seq: `tiny_t5_dir`), their tokenizers
(`tokenizer`, `chat_tokenizer`), small NER files, one writer of data files (`write_data`) and config composition."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO = REPO / "ftune" / "demo_data" / "ner"

# Tests run with no network: the hub libraries stay offline (also in the subprocesses they start), and any
# in-process connection to a non-loopback address fails the test (`_no_network` below).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# The feature cache of the test session lives in its own folder, not in the user's ~/.cache, and goes with the
# process that made it (each xdist worker makes one): 500 leaked folders once filled a CI machine's disk.
if "FTUNE_CACHE_DIR" not in os.environ:
    os.environ["FTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ftune-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FTUNE_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# make test runs one pytest-xdist worker per core: each worker (and every process it starts) computes on one
# thread, or the workers' OpenMP threads oversubscribe the cores and spin-wait (measured: a 20-minute suite).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

try:  # absl comes with rouge-score
    import absl.logging

    # absl's handler keeps the sys.stderr of the moment absl is imported: under pytest, a capture file. When a
    # later test's Hydra run reconfigures logging, absl closes that stream because it is no longer sys.stderr,
    # and pytest's capture dies ("I/O operation on closed file", "lost sys.stderr"). The real stderr it
    # never closes.
    absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__
except ImportError:
    pass

# Compositions (about a thousand in the suite) without re-reading the config files each time: tests/hydra_speed.py
from tests import hydra_speed  # noqa: E402

hydra_speed.install()

# The tiny trained runs of the deployment tests (ner_run, classification_run, qa_run, sft_run): registered once
# here, so each is built once per session rather than once per module that imports it.
pytest_plugins = ["tests.deploy_fixtures"]

_connect = socket.socket.connect


def _loopback_only(sock, address):
    """servers the tests start (ftune serve, Ray, gloo, wandb's core) listen on loopback; anything else is the
    network, which a test must never need"""
    host = address[0] if isinstance(address, tuple) else None
    if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
        raise AssertionError(f"a test tried to reach the network: {address}")
    return _connect(sock, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


def _clear_hydra() -> None:
    """Hydra's process-wide state after an in-process `ftune` call: the global config search and the job's
    HydraConfig (left set, it would make a later `train.run(cfg)` in the same worker read that job's output
    folder, or fail on `hydra.runtime.output_dir` after `--help`)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


# A test that gives no trainer.epochs means the former default, 3: the default step rule (trainer.epochs null:
# 3 epochs raised on small data until 1,000 optimizer steps, at most 10; docs/recipes.md) would make every tiny
# run 10 epochs. The in-process helpers switch the rule off unless a test sets it or runs a recipe; the rule has
# its own tests (tests/engine/test_steps.py: the arithmetic, the composed default, a run through the CLI).
NO_STEP_RULE = "trainer.min_steps=null"


def pinned_length(command: str, overrides: list[str]) -> list[str]:
    """`overrides` of an in-process `ftune train` (or a composed train config) with the step rule off, unless
    the test chose: it names trainer.epochs (then exact: the rule does not apply), trainer.min_steps, or an
    experiment (a recipe pins its own length)."""
    chosen = ("trainer.epochs=", "trainer.min_steps=", "experiment=")
    if command != "train" or any(o.lstrip("+~").startswith(chosen) for o in overrides):
        return list(overrides)
    return [*overrides, NO_STEP_RULE]


def run_cli(*args: str) -> None:
    """`ftune <args>` in-process (sparing the imports of a subprocess); the test fails unless it exits 0."""
    from ftune import cli

    _clear_hydra()
    try:
        cli.main([args[0], *pinned_length(args[0], list(args[1:]))] if args else [])
    except SystemExit as stop:
        assert stop.code in (0, None), f"ftune {' '.join(args)} exited with {stop.code}"
    finally:
        _clear_hydra()


def cli_exit_code(*args: str) -> int:
    """`ftune <args>` in-process; its exit code (0 when it returns)."""
    from ftune import cli

    _clear_hydra()
    try:
        cli.main([args[0], *pinned_length(args[0], list(args[1:]))] if args else [])
    except SystemExit as stop:
        return stop.code or 0
    finally:
        _clear_hydra()
    return 0


@contextlib.contextmanager
def crash_at_step(step: int):
    """Training started inside the block raises RuntimeError("simulated crash") once step `step` is done."""
    import ftune.engine.events as events

    original = events.build_subscribers

    def with_crash(*args):
        def crash(event):
            if event == {"event": "step", "step": step}:
                raise RuntimeError("simulated crash")

        crash.close = lambda: None
        return [*original(*args), crash]

    events.build_subscribers = with_crash
    try:
        yield
    finally:
        events.build_subscribers = original


def write_data(path: Path, content: list[dict] | str | bytes) -> Path:
    """The one writer of test data files: a list of rows becomes JSON Lines (one object a line, each ended by a
    newline); text or bytes are written as given (CSV, TSV, CoNLL, or deliberately broken files)."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in content))
    return path


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
def no_dropout_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT without dropout, for comparing processes: the ranks' random streams differ, so dropout masks
    would too."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-no-dropout")
    config = AutoConfig.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_model_dir, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """The tiny BERT's word-level tokenizer (per module: tasks may set attributes on the tokenizer they get)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


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

    from ftune.registry import register_configs

    register_configs()

    def _compose(name: str, overrides: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_module("ftune.configs", version_base="1.3"):
            return compose(name, overrides=pinned_length(name, overrides))

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


# ---- generative tasks: tiny random Llama (with a ChatML chat template) and T5, with a small BPE tokenizer ----
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEXT_CORPUS = [
    "the cat sat on the mat", "a dog ran in the park", "what colour is the sky ? the sky is blue",
    "translate this sentence please", "das ist ein kleines haus", "summarize the long story in short words",
    "hello , how are you today ? i am fine , thank you", "Paris is the capital of France .",
]


def _tiny_bpe(specials: list[str]):
    """A byte-level BPE tokenizer (any text encodes; decoding round-trips) trained in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXT_CORPUS * 4, trainer)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 Llama with random weights; tokenizer with a ChatML template and no pad token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_tiny_bpe(["<s>", "<|im_end|>", "<|im_start|>"]),
                                        bos_token="<s>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A 2+2-layer, d_model-32 T5 with random weights; its tokenizer ends every text with </s>, as T5's does."""
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    bpe = _tiny_bpe(["<pad>", "</s>", "<unk>"])
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_llama_dir):
    """The tiny Llama's BPE tokenizer with its ChatML template (per module: sft/dpo set its pad token)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def pytest_collection_modifyitems(items):
    """Longest first: real-data runs, then the slow tier (processes, servers), then the fast tests. make test's
    workers take tests in this order, so the minutes-long ones start at once and the many short ones fill the
    cores at the end, instead of one long test finishing alone on one core (measured: 18 min → see
    docs/development.md). The sort is stable: within a tier, files and tests keep their order."""
    def tier(item) -> int:
        return 0 if item.get_closest_marker("integration") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=tier)
