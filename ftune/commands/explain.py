"""`ftune explain`: token attributions of a run's (or model folder's) predictions, one JSON line per input, an
HTML page with explain.html=<file>; with explain.faithfulness=true, their faithfulness on a split instead."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ftune.commands.predict import _chunks, _open_in, _open_out
from ftune.inference import Inference

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    from ftune.explain.attribution import Explainer, Settings, check_settings

    options = cfg.explain
    settings = Settings(method=options.method, steps=options.steps, baseline=options.baseline,
                        samples=options.samples, noise=options.noise, target=options.target,
                        internal_batch_size=options.internal_batch_size)
    check_settings(settings)  # before the model loads
    explainer = Explainer(Inference.load(cfg), settings)
    if options.faithfulness:
        return _faithfulness(explainer, cfg)
    from ftune.explain.rows import explain_examples

    rows, count = [], 0
    try:
        with _open_in(cfg.input) as source, _open_out(cfg.output) as sink:
            for lines in _chunks(source):
                examples = explainer.task.read_inputs(lines, first_line=count + 1)
                for row in explain_examples(explainer, examples):
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    if options.html:
                        rows.append(row)
                sink.flush()
                count += len(lines)
    except BrokenPipeError:
        sys.stderr.close()
        return {"lines": count}
    if options.html:
        from ftune.explain import page

        title = f"ftune explain: {explainer.inference.run_dir or explainer.inference.folder}"
        log.info("wrote %s", page.write(rows, options.html, title))
    log.info("explained %d line(s) with %s", count, settings.method)
    return {"lines": count}


def _faithfulness(explainer, cfg: DictConfig) -> dict:
    from ftune.errors import FtuneError
    from ftune.explain import faithfulness

    options, inference = cfg.explain, explainer.inference
    examples = inference.task.load_split(options.split)
    if not len(examples):
        raise FtuneError(f"the run has no {options.split} split", where="explain.split",
                         fix="choose a configured split, e.g. explain.split=validation")
    n = min(len(examples), options.max_examples or len(examples))
    result = faithfulness.measure(explainer, [examples[i] for i in range(n)], seed=options.seed)
    result["split"] = options.split
    name = f"faithfulness_{options.split}_{options.method}.json"
    out = Path(cfg.output) if cfg.output != "-" else (inference.run.file(name) if inference.run else Path(name))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    ks = [f"{round(k * 100)}%" for k in result["ks"]]
    print(f"{'ranking':<22}{'measure':<19}" + "".join(f"{k:>8}" for k in [*ks, "AOPC"]), file=sys.stderr)
    for label, key, *values in faithfulness.table(result):
        print(f"{label:<22}{key:<19}" + "".join(f"{v:>8.3f}" for v in values), file=sys.stderr)
    log.info("%d target(s) in %d example(s), %.2f s per example (attribution); wrote %s", result["targets"],
             n, result["seconds_per_example"], out)
    return OmegaConf.to_container(OmegaConf.create(result))
