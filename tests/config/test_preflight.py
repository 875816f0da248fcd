"""The argument rewrites of ftune.config.preflight: what the user types becomes what Hydra reads (no Hydra run)."""

from __future__ import annotations

import pytest

from ftune.config.preflight import asks_hydra_info, hydra_args
from ftune.errors import FtuneError


def test_data_takes_its_action_as_the_first_argument():
    assert hydra_args("data", ["check", "task=ner"]) == ["action=check", "task=ner"]
    with pytest.raises(FtuneError, match="`ftune data` needs a subcommand"):
        hydra_args("data", ["task=ner"])


def test_model_names_a_folder_outside_train():
    assert hydra_args("eval", ["model=out/best"]) == ["model_dir=out/best"]
    assert hydra_args("train", ["model=minilm"]) == ["model=minilm"]


def test_task_keys_change_the_saved_settings_outside_train():
    assert hydra_args("export", ["task.max_length=64"]) == ["++task.max_length=64"]
    assert hydra_args("train", ["task.max_length=64"]) == ["task.max_length=64"]


def test_an_unquoted_check_is_quoted_for_hydra():
    assert hydra_args("eval", ["check=f1>=0.85"]) == ["check='f1>=0.85'"]
    assert hydra_args("eval", ["check='f1>=0.85'"]) == ["check='f1>=0.85'"]
    assert hydra_args("predict", ["check=it's"]) == ["check='it\\'s'"]


def test_hydra_info_flags_skip_the_preflight():
    assert asks_hydra_info(["--info=searchpath"]) and asks_hydra_info(["task=ner", "--help"])
    assert not asks_hydra_info(["-m", "--cfg", "job"])


@pytest.mark.parametrize("args", [[], ["-m", "trainer.seed=1,2"], ["hparams_search=optuna"], ["hydra.mode=MULTIRUN"]])
def test_the_preflight_reads_the_mode_that_hydra_would_compose_again_for(args):
    """cli.main hands preflight's `hydra.mode` to Hydra instead of letting Hydra.get_mode compose once more."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from ftune.config.preflight import UNCHECKED, preflight
    from ftune.registry import register_configs

    register_configs()
    overrides = [a for a in args if not a.startswith("-")]
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2("ftune", create_automatic_config_search_path(None, None, "pkg://ftune.configs"))
        composed = hydra.get_mode(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    assert preflight("train", args) == composed
    assert (composed is None) == (args in ([], ["-m", "trainer.seed=1,2"]))
    assert preflight("train", ["--config-dir=elsewhere"]) == UNCHECKED
