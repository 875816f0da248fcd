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
