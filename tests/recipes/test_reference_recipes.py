"""Reference recipes: matching a run (experiment= or data fingerprint), the inside/outside verdict, the one
warning line, the results.json record; and the sweep's mean ± std rows per setting across seeds."""

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftune import recipes
from ftune.sweep import across_seeds, print_summary, summarize
from tests.conftest import SHARED_DATA, run_cli

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiment"


def _recipe(low, high, split="validation", metric="f1"):
    return {"name": "r", "expected": {split: {metric: [low, high]}}, "source": "measured"}


@pytest.mark.parametrize("value,verdict", [(0.80, "inside"), (0.60, "below"), (0.95, "above"), (0.75, "inside")])
def test_verdict_against_the_expected_range(value, verdict):
    record = recipes.check(_recipe(0.75, 0.85), "experiment", {"validation": {"f1": value}}, {})
    assert record["verdict"] == verdict and record["checks"][0]["verdict"] == verdict
    shown, warning = recipes.lines(record)
    assert f"is {verdict} the expected range 0.75–0.85" in shown[0]
    assert (warning is not None) == (verdict == "below")


def test_the_warning_names_the_usual_causes_and_what_differs():
    record = recipes.check(_recipe(0.75, 0.85), "experiment", {"validation": {"f1": 0.3}},
                           {"optimizer.lr": [1e-6, 1e-4]})
    _, warning = recipes.lines(record)
    assert warning.startswith("validation f1 0.3 is below the range 0.75–0.85 that recipe r usually reaches")
    for cause in ("task.scheme", "task.max_length", "label set", "optimizer.lr"):
        assert cause in warning
    assert "differs from the recipe in optimizer.lr=1e-06 (recipe 0.0001)" in warning
    record["differs"]["data.train"] = ["0123", "4567"]
    assert "data.train (not the recipe's examples)" in recipes.lines(record)[1]
    assert "\n" not in warning  # one line


def test_a_split_the_run_did_not_evaluate_is_not_judged():
    record = recipes.check(_recipe(0.9, 0.92, split="test"), "experiment", {"validation": {"f1": 0.1}}, {})
    assert record["verdict"] == "not evaluated" and recipes.lines(record)[1] is None


def test_a_misspelt_metric_is_reported_not_passed():
    record = recipes.check(_recipe(0.7, 0.8, metric="F1"), "experiment", {"validation": {"f1": 0.75}}, {})
    assert record["verdict"] == "not evaluated" and record["checks"][0]["verdict"] == "unknown metric"
    assert "validation F1 is no metric of this task" in recipes.lines(record)[0][0]


@pytest.mark.parametrize("bounds,split", [([0.9, 0.8], "validation"), ([0.9], "validation"), ([0.1, 0.2], "dev")])
def test_a_bad_range_fails_before_training(bounds, split):
    from ftune.errors import FtuneError

    with pytest.raises(FtuneError, match=f"recipe.expected.{split}"):
        recipes.validate(OmegaConf.create({"expected": {split: {"f1": bounds}}}))


def test_fingerprint_follows_the_examples_not_where_they_came_from():
    examples = [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"], "where": "a.txt:1"}]
    moved = [{**examples[0], "where": "elsewhere/b.txt:7"}]
    relabelled = [{**examples[0], "tags": ["B-LOC", "O"]}]
    assert recipes.fingerprint("ner", examples) == recipes.fingerprint("ner", moved)
    assert recipes.fingerprint("ner", examples) != recipes.fingerprint("ner", relabelled)
    assert recipes.fingerprint("ner", examples) != recipes.fingerprint("classification", examples)


def test_differences_name_the_recipe_settings_a_run_changed(compose_config):
    experiment = OmegaConf.load(EXPERIMENTS / "conll2003_minilm.yaml")
    same = compose_config("train", ["experiment=conll2003_minilm"])
    assert recipes.differences(same, experiment) == {}
    changed = compose_config("train", ["experiment=conll2003_minilm", "optimizer.lr=1e-6", "trainer.epochs=1",
                                       "task.data.max_train=10"])  # data is the fingerprints' business
    assert recipes.differences(changed, experiment) == {"optimizer.lr": [1e-6, 2e-4], "trainer.epochs": [1, None]}
    recorded = dict(experiment.recipe.fingerprints)
    other = {**recorded, "train": "0123456789abcdef"}  # experiment= on other training data
    assert recipes.differences(same, experiment, other) == {"data.train": ["0123456789abcdef", recorded["train"]]}
    assert recipes.differences(same, experiment, recorded) == {}


def test_report_prints_the_verdict_under_the_tables(compose_config, capsys, monkeypatch):
    class Task:
        name, greater_is_better = "ner", True

    logged = []
    monkeypatch.setattr(recipes.log, "warning", logged.append)
    cfg = compose_config("train", ["experiment=conll2003_minilm", "optimizer.lr=1e-6"])
    low = OmegaConf.to_container(cfg.recipe.expected)["validation"]["f1"][0]
    record = recipes.report(cfg, {}, Task(), {"validation": {"f1": low - 0.2}})
    del record["differs"]["data.train"], record["differs"]["data.validation"]  # no splits given here
    assert record["name"] == "conll2003_minilm" and record["verdict"] == "below"
    assert "recipe conll2003_minilm (matched by experiment): validation f1" in capsys.readouterr().out
    assert len(logged) == 1 and "optimizer.lr=1e-06 (recipe 0.0002)" in logged[0]
    assert recipes.report(cfg, {}, Task(), {"validation": {"f1": low + 0.001}})["verdict"] == "inside"
    assert len(logged) == 1


def test_a_run_with_no_recipe_gets_no_record(compose_config):
    cfg = compose_config("train", [])
    assert recipes.match(cfg, {"train": recipes.fingerprint("ner", [{"tokens": ["x"], "tags": ["O"]}])}) is None


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model_dir, tiny_ner_data, monkeypatch):
    """A reference recipe for the tiny model on the small NER files, as configs/experiment/ would hold it,
    in a folder added to Hydra's search path; its range is where a normal run of it lands."""
    folder = tmp_path / "configs" / "experiment"
    folder.mkdir(parents=True)
    path = folder / "tiny_ner.yaml"

    def write(low: float, high: float, prints: dict | None = None) -> None:
        path.write_text(OmegaConf.to_yaml({  # the minilm group's YAML, with the tiny model's folder
            "defaults": [{"override /model": "minilm"}, {"override /task": "ner"}],
            "model": {"name": "tiny", "name_or_path": str(tiny_model_dir)},
            "task": {"data": {"train": str(tiny_ner_data["train"]), "validation": str(tiny_ner_data["validation"])}},
            "optimizer": {"lr": 3e-3}, "scheduler": {"warmup_ratio": 0.0}, "trainer": {"epochs": 6, "batch_size": 16},
            "logger": {"console": "none", "report": False},  # the verdict is in results.json and train.log
            # token accuracy: a tiny random BERT reaches no entity F1 worth the name in seconds
            "recipe": {"name": "tiny_ner", "expected": {"validation": {"accuracy": [low, high]}}, "source": "test",
                       "fingerprints": prints or {}}}))
        path.write_text("# @package _global_\n" + path.read_text())

    monkeypatch.setattr(recipes, "experiment_files", lambda: [path])
    return write, tmp_path / "configs"


def _train(searchpath: Path, run_dir: Path, *overrides: str) -> dict:
    run_cli("train", f"hydra.searchpath=[file://{searchpath}]", f"run_dir={run_dir}", *overrides)
    return json.loads((run_dir / "results.json").read_text())


def _warnings(run_dir: Path) -> list[str]:
    return [line for line in (run_dir / "train.log").read_text().splitlines() if "usually reaches" in line]


def test_a_run_inside_its_range_passes_and_one_forced_below_gets_the_warning(tiny_recipe, tmp_path):
    write, searchpath = tiny_recipe
    write(0.0, 1.0)
    normal = _train(searchpath, tmp_path / "normal", "experiment=tiny_ner")
    reached = normal["validation"]["accuracy"]
    assert reached > 0.5, "the tiny recipe should learn the demo data; the test needs a clear gap"
    assert normal["recipe"]["verdict"] == "inside" and not _warnings(tmp_path / "normal")

    # the recipe's range as seeds of it would give; the same recipe with a learning rate 10^6 times too low
    write(reached - 0.1, min(reached + 0.1, 1.0))
    low = _train(searchpath, tmp_path / "low", "experiment=tiny_ner", "optimizer.lr=3e-9")
    record = low["recipe"]
    assert low["validation"]["accuracy"] < reached - 0.1
    assert record["verdict"] == "below" and record["matched_by"] == "experiment"
    assert record["differs"] == {"optimizer.lr": [3e-9, 3e-3]}
    warnings = _warnings(tmp_path / "low")
    assert len(warnings) == 1 and " WARNING " in warnings[0] and "optimizer.lr=3e-09 (recipe 0.003)" in warnings[0]


def test_a_run_on_the_recipe_data_matches_without_experiment(tiny_recipe, tiny_model_dir, tiny_ner_data, tmp_path,
                                                             compose_config):
    write, searchpath = tiny_recipe
    plain = [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
             f"task.data.validation={tiny_ner_data['validation']}", "task.data.test=null",
             "trainer.max_steps=2", "logger.console=none"]
    prints = recipes.data_fingerprints(compose_config("train", ["task=ner", *plain]))
    assert set(prints) == {"train", "validation"}
    write(0.99, 1.0, prints)  # a range no two-step run reaches
    results = _train(searchpath, tmp_path / "plain", "task=ner", *plain)
    assert results["recipe"]["matched_by"] == "data fingerprint" and results["recipe"]["verdict"] == "below"
    assert results["recipe"]["differs"]["optimizer.lr"] == [2e-4, 3e-3]  # what the warning points at
    other = _train(searchpath, tmp_path / "other", "task=ner", *plain, "task.data.max_train=40")
    assert "recipe" not in other  # other data: no recipe applies


def _job(job, lr, seed, value, status="ok"):
    return {"job": job, "overrides": [f"optimizer.lr={lr}", f"trainer.seed={seed}"], "run_dir": f"/s/{job}",
            "status": status, "metric": "f1", "value": value, "greater_is_better": True, "error": None}


def test_sweep_summary_has_mean_and_std_per_setting_across_seeds(tmp_path, capsys):
    records = [_job(0, "1e-4", 1, 0.80), _job(1, "1e-4", 2, 0.82), _job(2, "1e-4", 3, 0.84),
               _job(3, "5e-5", 1, 0.70), _job(4, "5e-5", 2, 0.90), _job(5, "5e-5", 3, None, "failed")]
    rows = summarize(records)["settings"]
    assert [r["params"] for r in rows] == [{"optimizer.lr": "1e-4"}, {"optimizer.lr": "5e-5"}]
    first, second = rows
    assert first["n"] == 3 and first["mean"] == pytest.approx(0.82) and first["std"] == pytest.approx(0.02)
    assert (first["min"], first["max"], first["seeds"]) == (0.80, 0.84, ["1", "2", "3"])
    assert second["n"] == 2 and second["failed"] == 1 and second["std"] == pytest.approx(math.sqrt(0.02))
    assert first["best"] and not second["best"]  # 0.82 beats 0.80 on the mean, not on the best single seed
    assert across_seeds(summarize([_job(0, "1e-4", 1, 0.8), _job(1, "2e-4", 1, 0.7)])) == []  # no seed sweep
    print_summary(summarize(records), tmp_path)
    shown = capsys.readouterr().out
    assert "mean ± std over seeds (val/f1, * = best mean)" in shown
    assert "0.8200 ± 0.0200 *" in shown and "3 " in shown and "2 (1 failed)" in shown


# one experiment per distinct data (the bert-base-cased and roberta-base recipes share theirs)
WITH_DATA = list({json.dumps(OmegaConf.to_container(OmegaConf.load(p).recipe.fingerprints), sort_keys=True): p
                  for p in sorted(EXPERIMENTS.glob("*.yaml")) if OmegaConf.load(p).recipe.fingerprints}.values())


@pytest.mark.integration
@pytest.mark.parametrize("path", WITH_DATA, ids=lambda p: p.stem)
def test_shipped_fingerprints_match_the_shared_data(path, compose_config, monkeypatch, tmp_path):
    prints = OmegaConf.load(path).recipe.fingerprints
    if not (SHARED_DATA / "conll2003").is_dir():
        pytest.skip(f"no {SHARED_DATA}")
    monkeypatch.chdir(EXPERIMENTS.parents[1])  # the experiments' paths are relative to the repository root
    overrides = [f"experiment={path.stem}"]
    if path.stem == "squad_minilm":  # derived data (SQuAD dev by article): written by the script, here in tmp_path
        train, validation = recipe_search().squad_by_article(tmp_path, [1, 4], [4, 6])
        overrides += [f"task.data.train={train}", f"task.data.validation={validation}"]
    assert recipes.data_fingerprints(compose_config("train", overrides)) == dict(prints)


def recipe_search():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recipe_search", EXPERIMENTS.parents[1] / "scripts" / "recipe_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_search_shards_partition_the_grid(monkeypatch, tmp_path):
    """--shard 0/2 and 1/2 run disjoint halves of the grid that together are all of it; --merge joins their files."""
    import argparse

    search = recipe_search()
    options = {"scale": "full", "tasks": ["ner", "sst2"], "models": ["minilm"], "lrs": None, "warmup": None,
               "weight_decay": None, "epochs": None, "seeds": None, "batch_sizes": None, "min_steps": None, "max_epochs": 10}
    whole = search.grid(argparse.Namespace(**options, shard=None))
    # the batch-size axis multiplies the grid and names itself; without it, the keys of earlier runs stay
    batches = search.grid(argparse.Namespace(**{**options, "batch_sizes": [8, 32]}, shard=None))
    assert len(batches) == 2 * len(whole)
    assert {search.setting_name(run[2]).split(" bs=")[1] for run in batches} == {"8", "32"}
    assert all(" bs=" not in search.setting_name(run[2]) for run in whole)
    rule = search.grid(argparse.Namespace(**{**options, "min_steps": [1000]}, shard=None))
    assert search.setting_name(rule[0][2]) == "lr=0.0001 warmup=0 wd=0 ep=3 min_steps=1000/10"
    halves = [search.grid(argparse.Namespace(**options, shard=search.shard(f"{i}/2"))) for i in (0, 1)]
    assert len(whole) == 3 * 6 * 2 * 3 and sorted(map(repr, halves[0] + halves[1])) == sorted(map(repr, whole))
    assert not {repr(run) for run in halves[0]} & {repr(run) for run in halves[1]}
    with pytest.raises(argparse.ArgumentTypeError):
        search.shard("2/2")
    run = {"task": "ner", "model": "m", "sizes": {"train": 1}, "setting": "A", "metric": "f1", "value": 0.5}
    for name, seed in (("a", 1), ("b", 2)):
        search.save(tmp_path / f"{name}.json", {"runs": {f"key{seed}": {**run, "seed": seed}}})
    monkeypatch.setattr("sys.argv", ["recipe_search.py", "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                     "--out", str(tmp_path / "all.json")])
    search.main()
    assert sorted(search.load(tmp_path / "all.json")["runs"]) == ["key1", "key2"]


def test_recipe_search_prefers_the_setting_never_far_from_the_best():
    """The choice rule of scripts/recipe_search.py: the smallest worst gap across tasks, not one task's winner."""
    search = recipe_search()
    runs = {}
    for task, metric, values in (("ner", "f1", {"A": [0.80, 0.82], "B": [0.79, 0.80]}),
                                 ("sst2", "accuracy", {"A": [0.70, 0.72], "B": [0.84, 0.86]})):
        for setting, seeds in values.items():
            for seed, value in enumerate(seeds):
                runs[f"{task}|{setting}|{seed}"] = {"task": task, "model": "m", "sizes": {"train": 10},
                                                    "setting": setting, "seed": seed, "metric": metric, "value": value}
    table = search.tables({"runs": runs})
    assert "| A | 81.00 ± 1.41 | 80.00 – 82.00 | 2 |" in table  # ner: A wins by 1.5 points
    assert "| B | 1.50 | 0.00 | 0.75 | 1.50 |" in table  # gaps: ner 1.5, sst2 0, mean 0.75, worst 1.5
    assert "choice for m: `B` (smallest worst gap)" in table  # A loses sst2 by 14 points


def test_recipe_search_keeps_each_data_size_of_a_task_apart():
    """The same task at two data sizes is two columns of the gap table, not one overwriting the other."""
    search = recipe_search()
    runs = {f"{train}|{setting}": {"task": "ner", "model": "m", "sizes": {"train": train}, "setting": setting,
                                   "seed": 1, "metric": "f1", "value": value}
            for train, setting, value in ((10, "A", 0.5), (10, "B", 0.6), (99, "A", 0.9), (99, "B", 0.8))}
    table = search.tables({"runs": runs})
    assert "| setting | ner (train=10) | ner (train=99) | mean gap | worst gap |" in table
    assert "| A | 10.00 | 0.00 | 5.00 | 10.00 |" in table and "| B | 0.00 | 10.00 | 5.00 | 10.00 |" in table


def test_a_step_rule_that_adds_no_epoch_at_a_size_stands_on_the_plain_runs():
    """At 15,000 examples and batch 32 the rule (min_steps=1000) keeps 3 epochs: the plain setting's runs are its
    row there; at 1,000 it would train 10 epochs, so nothing stands in for a missing run."""
    search = recipe_search()
    plain, rule = "lr=0.0002 ep=3 bs=32", "lr=0.0002 ep=3 bs=32 min_steps=1000/10"
    runs = {f"{train}|{setting}": {"task": "ner", "model": "m", "sizes": {"train": train}, "setting": setting,
                                   "seed": 1, "metric": "f1", "value": value}
            for train, setting, value in ((1000, plain, 0.80), (1000, rule, 0.88), (15000, plain, 0.93),
                                          (4000, plain, 0.91))}
    table = search.tables({"runs": runs})
    assert f"| {rule} | 93.00 ± – | 93.00 – 93.00 | 1 |" in table  # 15,000: the plain run stands for the rule
    assert f"`{rule}` adds no epoch to 15,000 examples" in table
    assert "adds no epoch to 4,000" not in table and "adds no epoch to 1,000" not in table  # 8 and 10 epochs there


def test_a_recipe_never_blocks_a_resume(compose_config):
    """A run trained before recipes existed (no `recipe:` in its config.yaml), or under another range, resumes."""
    from ftune import resume

    cfg = compose_config("train", ["experiment=conll2003_minilm"])
    saved = OmegaConf.create(OmegaConf.to_container(cfg))
    del saved["recipe"]
    assert resume.changes(saved, cfg) == {}
