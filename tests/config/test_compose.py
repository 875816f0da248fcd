"""Every shipped config composes; bad keys, types and names fail with one line that names the key."""

import contextlib
from pathlib import Path

import pytest

from ftune.config import check_known_keys
from ftune.errors import FtuneError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_experiment_composes_and_validates(compose_config, path):
    """A reference recipe: its header is the command, it names itself, and its ranges are ranges."""
    cfg = compose_config("train", [f"experiment={path.stem}"])
    check_known_keys(cfg)
    text = path.read_text()
    assert text.startswith("# @package _global_\n") and f"ftune train experiment={path.stem}" in text
    assert cfg.recipe.name == path.stem and cfg.recipe.source and cfg.recipe.expected
    assert cfg.model.name in path.stem  # e.g. conll2003_minilm trains minilm
    for metrics in cfg.recipe.expected.values():
        for metric, (low, high) in metrics.items():
            assert low < high, f"{path.stem}: {metric} range {low}–{high}"


@pytest.mark.parametrize("name", ["eval", "predict", "chat"])
def test_eval_and_predict_configs_compose(compose_config, name):
    cfg = compose_config(name, ["run_dir=somewhere", "task=ner"])
    check_known_keys(cfg)
    assert cfg.run_dir == "somewhere" and cfg.task.name == "ner"


def test_default_train_config_is_the_offline_demo(compose_config):
    cfg = compose_config("train", [])
    assert cfg.model.name == "minilm" and cfg.model.name_or_path.startswith("pkg:")
    assert cfg.task.data.train.startswith("pkg:ftune/demo_data/")
    assert cfg.optimizer.lr == pytest.approx(2e-4)  # from model_optimizer/minilm_adamw.yaml (docs/recipes.md)
    assert cfg.scheduler.warmup_ratio == 0.0  # configs/scheduler/linear.yaml, measured too


def test_optimizer_arguments_are_bound_to_the_class_signature(compose_config):
    from ftune.optim import optimizer_args

    cls, args = optimizer_args(compose_config("train", ["optimizer=sgd"]).optimizer)
    assert cls.__name__ == "SGD" and args == {"momentum": 0.9, "nesterov": False}
    with pytest.raises(FtuneError, match="did you mean `momentum`"):
        optimizer_args(compose_config("train", ["optimizer=sgd", "+optimizer.args.momentom=0.5"]).optimizer)


def test_plus_added_unknown_keys_are_rejected(compose_config):
    with pytest.raises(FtuneError, match=r"unknown config key `trainer.epochz` \(did you mean `trainer.epochs`"):
        check_known_keys(compose_config("train", ["+trainer.epochz=3"]))
    with pytest.raises(FtuneError, match=r"unknown config key `task.data.trian`"):
        check_known_keys(compose_config("train", ["+task.data.trian=x"]))


@pytest.mark.parametrize("override,expected", [
    ("trainer.epochz=3", "unknown config key `trainer.epochz` (did you mean `trainer.epochs`?"),
    ("trainer.epochs=abc", "trainer.epochs: Value 'abc' of type 'str' could not be converted to Integer"),
    ("model=bert", "unknown model `bert` (did you mean `bert-base-cased`? choose from: "),
    ("optimizer=adamw2", "unknown optimizer `adamw2`"),
])
def test_preflight_turns_composition_errors_into_one_line(override, expected):
    from ftune.config.preflight import preflight as _preflight
    from ftune.registry import register_configs

    register_configs()
    with pytest.raises(FtuneError) as error:
        _preflight("train", [override])
    assert expected in error.value.one_line()
    assert "\n" not in error.value.one_line()


def test_preflight_checks_every_value_of_a_sweep():
    from ftune.config.preflight import preflight as _preflight
    from ftune.registry import register_configs

    register_configs()  # as ftune.cli does before preflight (the test must not depend on an earlier test's)
    _preflight("train", ["-m", "optimizer.lr=1e-5,3e-5", "trainer.seed=1,2"])
    with pytest.raises(FtuneError, match="unknown model `nope`"):
        _preflight("train", ["-m", "model=minilm,nope"])


def test_task_model_pairs_of_generative_tasks_compose(compose_config):
    cfg = compose_config("train", ["task=summarization", "model=t5-small"])
    check_known_keys(cfg)
    assert cfg.task.name == "seq2seq" and cfg.task.prefix == "summarize: " and cfg.task.metrics == "rouge"
    assert compose_config("train", ["task=translation", "model=opus-mt-en-de"]).task.prefix == ""


@pytest.mark.parametrize("name,overrides", [
    ("train", []), ("train", ["task=qa", "peft=lora", "experiment=sst2_minilm"]), ("train", ["hparams_search=optuna"]),
    *[(name, ["run_dir=somewhere"]) for name in ("eval", "predict", "chat", "serve", "export", "explain", "stress")],
    ("data", ["action=check", "task=ner"]), ("report", ["run_dir=somewhere"]), ("push", ["run_dir=r", "repo_id=me/x"]),
])
def test_the_suites_faster_composition_composes_what_hydra_does(name, overrides):
    """tests/hydra_speed.py (installed for every test process by conftest) changes the speed, not the result."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from ftune.registry import register_configs
    from tests.hydra_speed import plain_hydra

    register_configs()
    composed = []
    for context in (plain_hydra(), contextlib.nullcontext(), contextlib.nullcontext()):  # the 2nd fills the cache
        GlobalHydra.instance().clear()
        with context, initialize_config_module("ftune.configs", version_base="1.3"):
            composed.append(OmegaConf.to_yaml(compose(name, overrides=overrides, return_hydra_config=True)))
    GlobalHydra.instance().clear()
    assert composed[0] == composed[1] == composed[2]
