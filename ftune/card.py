"""Model cards: README.md of best/ and of every `ftune export` folder, written with huggingface_hub's
ModelCard / ModelCardData (metadata block + markdown body). Built from the run directory only:
config.yaml, results.json, .hydra/overrides.yaml and the report's loss plot. Nothing here touches the network.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
from pathlib import Path
from typing import Any

from ftune.init_from import describe
from ftune.registry import TASKS
from ftune.run_dir import RunDir
from ftune.tasks.base import DEFAULTS_TASK, TaskBase

GENERIC_EXAMPLE = "This is a short example text ."  # the usage example's input where the task names none
LOSS_PLOT = "training_loss.png"


def _load(run_dir: Path | None) -> tuple[dict, dict, list[str]]:
    run = RunDir.of(run_dir)
    if run is None or not run.is_run:
        return {}, {}, []
    return run.config_dict(), run.results(), run.overrides()


def base_model(config: dict) -> str | None:
    """A hub id, or None for a local folder (the hub's base_model must be a repo id)."""
    model = config.get("model") or {}
    name = str(model.get("name_or_path") or "")
    if model.get("hub_id") and name.startswith(("pkg:", "gguf:")):  # the preset's packaged copy of a hub model
        return model["hub_id"]
    local = name.startswith(("pkg:", "gguf:", "/", ".", "~")) or Path(name).exists() or name.count("/") > 1
    return None if local or not name else name


def _labels(folder: Path) -> list[str]:
    for name in ("config.json", "base_config.json"):
        if (folder / name).is_file():
            id2label = json.loads((folder / name).read_text()).get("id2label") or {}
            return [id2label[k] for k in sorted(id2label, key=int)]
    return []


def _datasets(task: dict) -> tuple[list[str] | None, str]:
    data = task.get("data") or {}
    local = any(data.get(split) for split in ("train", "validation", "test"))  # local files win over the hub
    if data.get("hub") and not local:
        return [data["hub"]], f"`{data['hub']}`" + (f" ({data['hub_config']})" if data.get("hub_config") else "")
    files = [f"{split}: `{Path(data[split]).name}`" + (f" (first {data[f'max_{split}']})" if data.get(f"max_{split}") else "")
             for split in ("train", "validation", "test") if data.get(split)]
    return None, ", ".join(files) or "not recorded"


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def eval_results(results: dict, pipeline_tag: str, dataset: str) -> list:
    from huggingface_hub import EvalResult

    return [EvalResult(task_type=pipeline_tag, dataset_type=dataset, dataset_name=dataset, dataset_split=split,
                       metric_type=key, metric_name=f"{split} {key}", metric_value=value)
            for split in ("validation", "test") for key, value in _scalars(results.get(split)).items()]


def task_facts(task_name: str | None) -> type[TaskBase]:
    """The registered task class, whose facts (pipeline tag, Auto class, example) the card reads; TaskBase's
    defaults (a text classifier) for a folder whose task is unknown or no longer registered."""
    return TASKS[task_name].target if task_name in TASKS else TaskBase


def usage(task_name: str | None, model_id: str, adapter: bool) -> str:
    """Python that loads the model and predicts once: the card's `How to use` (tested as it is written)."""
    facts = task_facts(task_name)
    auto, auto_peft, pipe = facts.auto_class, facts.auto_peft_class(), facts.pipeline_task
    text = facts.card_example or GENERIC_EXAMPLE
    chat = facts.chat_input == "messages"  # a chat model: the example goes through the chat template
    lines = [f"model_id = {model_id!r}  # this folder, or its hub repo id"]
    if adapter:
        lines = ["import json", "import os", "", *lines]
        lines += ["from huggingface_hub import hf_hub_download", "from peft import " + auto_peft,
                  "from transformers import AutoTokenizer", "",
                  "# the adapter's base model lacks this task's labels: base_config.json has them",
                  'base_config = os.path.join(model_id, "base_config.json") if os.path.isdir(model_id) '
                  'else hf_hub_download(model_id, "base_config.json")',
                  'labels = json.load(open(base_config)).get("id2label")',
                  f"model = {auto_peft}.from_pretrained(model_id, **({{'id2label': labels}} if labels else {{}}))",
                  "tokenizer = AutoTokenizer.from_pretrained(model_id)"]
        if chat:
            lines += [f"inputs = tokenizer.apply_chat_template([{{'role': 'user', 'content': {text!r}}}], "
                      "add_generation_prompt=True, return_tensors='pt', return_dict=True)",
                      "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))"]
        else:
            lines += [f"print(model(**tokenizer({text!r}, return_tensors='pt')).logits.shape)"]
        return "\n".join(lines)
    if pipe is not None:
        lines += ["from transformers import pipeline", "", f"model = pipeline({pipe!r}, model=model_id)"]
        if chat:
            lines += [f"print(model([{{'role': 'user', 'content': {text!r}}}], max_new_tokens=32))"]
        else:
            lines += [f"print(model({text!r}))"]
        return "\n".join(lines)
    lines += [f"from transformers import AutoTokenizer, {auto}", "",
              f"model = {auto}.from_pretrained(model_id)", "tokenizer = AutoTokenizer.from_pretrained(model_id)"]
    if facts.card_usage:
        lines += list(facts.card_usage)
    else:
        lines += [f"print(tokenizer.decode(model.generate(**tokenizer({text!r}, return_tensors='pt'), "
                  "max_new_tokens=32)[0], skip_special_tokens=True))"]
    return "\n".join(lines)


def _versions() -> str:
    import importlib.metadata as md

    found = []
    for package in ("ftune", "transformers", "torch", "peft", "accelerate", "huggingface_hub"):
        try:
            found.append(f"{package} {md.version(package)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(found + [f"Python {platform.python_version()}"])


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
                      *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)])


def build_card(folder: Path, run_dir: Path | None = None, repo_id: str | None = None, merged: bool = False):
    """The ModelCard of a model folder trained by an ftune run (not written)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    config, results, overrides = _load(run_dir)
    task = config.get("task") or {}
    task_name = task.get("name") or results.get("task") or DEFAULTS_TASK
    pipeline_tag = task_facts(task_name).pipeline_tag
    adapter = (folder / "adapter_config.json").is_file()
    peft_cfg, freeze_cfg = config.get("peft") or {}, config.get("freeze") or {}
    base = base_model(config)
    datasets, data_text = _datasets(task)
    name = repo_id.split("/")[-1] if repo_id else f"{(config.get('model') or {}).get('name', 'model')}-{task_name}"
    dataset = datasets[0] if datasets else f"{task_name} (local files)"
    tags = ["ftune", task_name] + ([peft_cfg.get("name"), "peft"] if adapter else []) + (["merged"] if merged else [])
    data = ModelCardData(base_model=base, library_name="peft" if adapter else "transformers", pipeline_tag=pipeline_tag,
                         tags=tags, datasets=datasets, model_name=name,
                         eval_results=eval_results(results, pipeline_tag, dataset) or None)
    labels = _labels(folder)
    base_text = f"`{base}`" if base else f"the local model `{(config.get('model') or {}).get('name_or_path')}`"
    method = (f"PEFT method `{peft_cfg.get('name')}` (an adapter on the frozen base model)" if adapter else
              f"PEFT `{peft_cfg.get('name')}`, merged into the base weights" if merged else
              f"full fine-tuning{'' if freeze_cfg.get('name') in (None, 'none') else ', freeze=' + freeze_cfg['name']}")
    train = results.get("train") or {}
    body = [f"# {name}", "",
            f"A {task_name} model fine-tuned from {base_text} with ftune ({method}).", "",
            *([describe(results.get("init_from")), ""] if results.get("init_from") else []),
            "## Training data", "", f"- data: {data_text}",
            f"- training examples: {train.get('examples', 'not recorded')}",
            f"- labels ({len(labels)}): {', '.join(f'`{label}`' for label in labels[:50])}"
            + (" ..." if len(labels) > 50 else "") if labels else "- labels: none (a generative task)", "",
            "## Training procedure", ""]
    trainer, optimizer, scheduler = config.get("trainer") or {}, config.get("optimizer") or {}, config.get("scheduler") or {}
    rows = [["optimizer", f"{optimizer.get('name')} (lr {optimizer.get('lr')}, weight decay {optimizer.get('weight_decay')})"],
            ["scheduler", f"{scheduler.get('name')} (warm-up ratio {scheduler.get('warmup_ratio')}, "
                          f"steps {scheduler.get('warmup_steps')})"],
            ["epochs / max steps", f"{'step rule' if trainer.get('epochs') is None else trainer['epochs']} / {trainer.get('max_steps')}"],
            ["batch size × accumulation × processes", f"{trainer.get('batch_size')} × {trainer.get('grad_accum')} × "
                                                      f"{train.get('processes', 1)}"],
            ["precision", results.get("precision", trainer.get("precision"))], ["seed", trainer.get("seed")],
            ["steps (best step)", f"{results.get('steps')} ({results.get('best_step')})"]]
    rows += [[f"task.{k}", v] for k, v in task.items() if k not in ("name", "data") and not isinstance(v, dict)]
    rows += [[f"peft.{k}", v] for k, v in peft_cfg.items() if k != "args" and peft_cfg.get("name") != "none"]
    params = results.get("parameters") or {}
    if params:
        rows.append(["trainable parameters", f"{params.get('trainable'):,} of {params.get('total'):,} "
                                             f"({params.get('percent')}%)"])
    body += [_table(["setting", "value"], rows), ""]
    body += ["## Evaluation", ""]
    for split in ("validation", "test"):
        metrics = results.get(split)
        if isinstance(metrics, dict):
            body += [f"{split} split:", "", _table(["metric", "value"], [[k, v] for k, v in _scalars(metrics).items()]), ""]
            for key in ("per_type", "per_class"):
                if isinstance(metrics.get(key), dict) and metrics[key]:
                    columns = list(dict.fromkeys(c for r in metrics[key].values() for c in r))
                    body += [_table([key.replace("_", " "), *columns],
                                    [[n, *(r.get(c) for c in columns)] for n, r in metrics[key].items()]), ""]
    if results.get("forgetting"):  # continual.previous: what the earlier stages keep after this one
        from ftune.continual.forgetting import HEADER, table_rows

        body += ["Earlier runs' validation metric when they were trained and with this model (forgetting):", "",
                 _table(HEADER, table_rows(results["forgetting"])), ""]
    if not results:
        body += ["No results.json was found: the run did not finish.", ""]
    robustness = RunDir(run_dir).stress_results() if run_dir is not None else {}
    for split, stress in robustness.items():  # `ftune stress`: the metric under perturbations
        main = stress.get("metric", "metric")
        body += ["## Robustness", "", f"{main} on the {split} split ({stress.get('examples')} examples) under "
                 f"perturbations (`ftune stress`; mean over seeds {stress.get('seeds')}):", "",
                 _table(["perturbation", main, "change", "predictions flipped"],
                        [["clean", round(stress["clean"], 4), "", ""]] +
                        [[r["perturbation"], round(r[main], 4), f"{r['delta']:+.4f}", f"{r['flipped']:.1%}"]
                         for r in stress.get("perturbations", [])]), ""]
        if stress.get("attack"):  # stress.attack=input_reduction
            from ftune.explain.reduction import summary

            body += [summary(stress["attack"]) + ".", ""]
    if (folder / LOSS_PLOT).is_file():
        body += [f"![training loss]({LOSS_PLOT})", ""]
    model_id = repo_id or str(folder.resolve())
    body += ["## How to use", "", "```python", usage(task_name, model_id, adapter), "```", ""]
    if run_dir is not None and RunDir(run_dir).has_overrides:
        body += ["## Reproduce", "", "```bash", ("ftune train " + " ".join(shlex.quote(o) for o in overrides)).strip(),
                 "```", "", "(the resolved configuration is the run's `config.yaml`; data paths are those of the "
                 "training machine)", ""]
    else:
        body += ["## Reproduce", "", "Started from Python (`ftune.commands.train.run`), so no command line was "
                 "recorded; the run's `config.yaml` holds the resolved configuration.", ""]
    body += ["## Limitations", "",
             f"- Trained and evaluated only on the data above ({train.get('examples', '?')} training examples); "
             "expect lower scores on text from other domains, periods or languages.",
             "- The metrics are those of the selected checkpoint on the named splits, with one seed; "
             + ("robustness was measured only under the perturbations above; no bias or fairness evaluation "
                "was run." if robustness else "no robustness, bias or fairness evaluation was run."),
             "- Inherits the limitations and biases of the base model and of its pre-training data.", "",
             "## Versions", "", _versions(), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def write_card(folder: Path, run_dir: Path | None = None, repo_id: str | None = None, merged: bool = False) -> Path:
    """Write <folder>/README.md (and the loss plot next to it, when the run has one); returns the card's path.
    `run_dir` defaults to the folder's parent when that is a run directory (best/)."""
    folder = Path(folder)
    if run_dir is None and RunDir(folder.parent).is_run:
        run_dir = folder.parent
    plot = Path(run_dir) / "report" / "loss.png" if run_dir else None
    if plot is not None and plot.is_file():
        shutil.copyfile(plot, folder / LOSS_PLOT)
    card = build_card(folder, Path(run_dir) if run_dir else None, repo_id, merged)
    tmp = folder / ".README.md.tmp"
    card.save(tmp)
    tmp.replace(folder / "README.md")
    return folder / "README.md"
