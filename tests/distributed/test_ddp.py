"""Data parallel on CPU: 2 torchrun processes (gloo) against 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _train(tmp_path, launcher, overrides):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "ftune", "train", *overrides], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, no_dropout_model, tiny_ner_data):
    common = [f"model.name_or_path={no_dropout_model}", "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
              f"task.data.validation={tiny_ner_data['validation']}", f"task.data.test={tiny_ner_data['test']}",
              "trainer.epochs=2", "optimizer.lr=1e-3", "trainer.precision=fp32", "logger.console=plain",
              "trainer.eval_batch_size=5"]  # 32 test sentences: 7 eval batches, 4 on rank 0 and 3 on rank 1
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # global batch 32 in both: 2 processes x 16, or 1 process x 16 x 2 accumulation steps
    launched = _train(tmp_path, torchrun, [*common, "trainer.batch_size=16", "run_dir=two_${now:%H-%M-%S-%f}"])
    _train(tmp_path, [sys.executable], [*common, "trainer.batch_size=16", "trainer.grad_accum=2", "run_dir=one"])

    folders = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two_"))
    assert len(folders) == 1  # ${now:%f} differs per rank, the folder does not: rank 0 decided
    one_results = json.loads((tmp_path / "one" / "results.json").read_text())
    two_results = json.loads((tmp_path / folders[0] / "results.json").read_text())
    assert two_results["train"]["processes"] == 2 and one_results["steps"] == two_results["steps"] == 6
    for split in ("validation", "test"):
        one, two = one_results[split], two_results[split]
        # evaluation gathered from both ranks: every entity counted once, none dropped
        assert {k: v["support"] for k, v in two["per_type"].items()} == {k: v["support"] for k, v in one["per_type"].items()}
        assert two["entities"] == one["entities"]
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-3)
        for metric in ("f1", "precision", "recall", "accuracy"):
            assert two[metric] == pytest.approx(one[metric], abs=0.01)
    assert launched.stderr.count("training on 96 examples") == 1  # rank 0 tells the story


class _Rank:
    """The few Accelerator members Engine.infer uses, as rank `index` of `count` processes would see them."""

    def __init__(self, index, count):
        self.process_index, self.num_processes, self.device = index, count, torch.device("cpu")

    def prepare(self, model):
        return model

    def unwrap_model(self, model):
        return model

    def reduce(self, tensor, op):
        return tensor


def test_each_rank_evaluates_its_own_share_and_the_gather_restores_order(tiny_model_dir, tiny_ner_data, monkeypatch):
    from accelerate import utils
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from ftune.engine.loop import Engine
    from ftune.registry import defaults
    from ftune.tasks.ner import NerTask

    task = NerTask(defaults("task", "ner"))
    examples = task.load_file(str(tiny_ner_data["validation"]))
    task.fit_labels(examples, {})
    features = task.featurize(examples, AutoTokenizer.from_pretrained(tiny_model_dir))
    model = task.build_model(str(tiny_model_dir))
    cfg = OmegaConf.merge(defaults("trainer", "default"), dict(num_workers=0))
    alone, _ = Engine(model, task, cfg, _Rank(0, 1)).infer(features, 5)

    shares: dict[int, list] = {}

    def gather(mine):  # stands in for the collective: keeps this rank's share, returns all shares so far
        shares[len(shares)] = mine
        return [item for rank in sorted(shares) for item in shares[rank]]

    monkeypatch.setattr(utils, "gather_object", gather)
    Engine(model, task, cfg, _Rank(0, 2)).infer(features, 5)
    together, _ = Engine(model, task, cfg, _Rank(1, 2)).infer(features, 5)  # its gather returns both shares
    seen = [index for rank in (0, 1) for index, _ in shares[rank]]
    assert sorted(seen) == list(range(len(features)))  # every feature once: nothing duplicated or dropped
    assert 0 < len(shares[1]) < len(features)  # rank 1 did part of the work, not all of it
    assert together == alone  # in feature order
