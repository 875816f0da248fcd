"""`ftune stress`: a run's metric on its evaluation split under seeded perturbations (typos, case, punctuation,
whitespace, entity swaps, invariant substitutions); writes stress_<split>.json into the run and prints a table."""

from __future__ import annotations

import json
import logging
import sys

from omegaconf import DictConfig, OmegaConf

from ftune.errors import FtuneError
from ftune.inference import Inference

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    from ftune.explain import stress

    if not cfg.run_dir:
        raise FtuneError("stress needs a training run", where="run_dir", fix="pass run_dir=<the run's folder>")
    inference = Inference.load(cfg)
    task, settings = inference.task, cfg.stress
    if task.stress_input is None:
        raise FtuneError(f"task={task.name} has no perturbation suite", where="task",
                         fix="stress a run of a text classification or tagging task")
    stress.plan(settings, task.stress_input)  # unknown perturbation names: before the split loads
    if settings.attack and (task.stress_input != "text" or task.explain_output != "labels" or not task.explainable):
        raise FtuneError(f"task={task.name} cannot be attacked by {settings.attack}", where="stress.attack",
                         fix="input_reduction attacks a run of a task that labels a text (classification)")
    split = task.load_split(cfg.split)
    if not len(split):
        raise FtuneError(f"the run has no {cfg.split} split", where="split", fix="choose a configured split")
    task.check_examples(split, cfg.split)
    n = min(len(split), settings.max_examples or len(split))
    examples = [dict(split[i]) for i in range(n)]
    train = task.load_split("train") if task.stress_input == "tagged_tokens" else None
    result = stress.run_suite(inference, examples, settings, train, log)
    result["split"] = cfg.split
    if settings.attack:  # input_reduction
        from ftune.explain import reduction
        from ftune.explain.attribution import Explainer, Settings

        explainer = Explainer(inference, Settings(method=settings.attack_method))
        result["attack"] = reduction.reduce_inputs(explainer, examples)
    out = inference.run.file(f"stress_{cfg.split}.json")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    table = "\n".join(stress.table(result))
    if "attack" in result:
        from ftune.explain.reduction import summary

        table += "\n" + summary(result["attack"])
    print(table, file=sys.stderr if cfg.output_format == "json" else sys.stdout)
    if cfg.output_format == "json":
        print(json.dumps(result))
    attack = f", {settings.attack} {result['attack']['seconds']:.0f} s" if "attack" in result else ""
    log.info("wrote %s (%d examples; perturbations %.0f s%s)", out, n, result["seconds"], attack)
    returned = {k: v for k, v in result.items() if k not in ("perturbations", "attack")}
    return OmegaConf.to_container(OmegaConf.create(returned))
