"""`ftune train`: fine-tune a model and write a self-describing run directory."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ftune import freeze, peft, provenance, recipes, resume
from ftune import init_from as I
from ftune import run as R
from ftune.continual import fisher, stage
from ftune.errors import FtuneError
from ftune.freeze import parameter_counts
from ftune.tasks.base import Task

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    """Train as configured; returns the metrics dict (also written to <run_dir>/results.json)."""
    from accelerate.utils import set_seed

    from ftune.config import constraints
    from ftune.data import cache
    from ftune.distributed import share_from_main
    from ftune.engine import checkpoint as ckpt
    from ftune.engine.device import make_accelerator
    from ftune.engine.events import build_subscribers
    from ftune.engine.loop import Engine, plan, total_steps
    from ftune.engine.sharding import shard
    from ftune.loggers import check_backends
    from ftune.models import load_tokenizer, locate
    from ftune.optim import build_optimizer, build_scheduler
    from ftune.registry import build_task, peft_plugin

    started = time.perf_counter()
    run_dir = R.hydra_output_dir(cfg.run_dir)
    R.validate_train_config(cfg)
    recipes.validate(cfg.get("recipe"))
    R.check_output_format(cfg.output_format)
    check_backends(cfg.logger.backends)
    accelerator, precision = make_accelerator(cfg.trainer.precision, cfg.trainer.device)
    cfg, run_dir = share_from_main(accelerator, cfg, run_dir)
    R.check_run_dir(run_dir, cfg.resume, cfg.overwrite)
    resume_from = ckpt.find(run_dir, cfg.resume)
    accepted: dict = {}
    if resume_from is not None:
        accepted = resume.check(run_dir, cfg)  # nothing is written before this passes
        peft_plugin(cfg.peft.name).check_resume()

    # offline hub ids fail here, before data is read
    model_path = locate(cfg.model.name_or_path, allow_pickle=cfg.model.allow_pickle)
    R.check_model_limits(cfg.task, model_path)
    source = I.resolve(cfg.init_from) if cfg.get("init_from") else None
    if source is not None:
        I.check(source, cfg)  # architecture, vocabulary, base model: from config files, before data loads
    previous = stage.check(cfg, source)  # the continual group: earlier runs, replay, regulariser, adapter
    task = build_task(cfg.task)
    splits = R.load_splits(task)
    old_labels = stage.same_task_labels(source, task)  # from a run of the same task: its label ids are kept
    stage.fit_labels(task, splits, old_labels)
    # the earlier types, where the new data leaves them untagged, from the earlier model (continual.pseudo_label)
    splits["train"], pseudo = stage.pseudo_label(cfg, task, splits["train"], source)
    earlier = stage.previous_validation(previous, task, cfg.continual.adapter is not None)
    if resume_from is not None and task.has_labels:
        _check_resumable(resume_from, task.labels)
    shown = ", ".join(task.labels[:12]) + (f" ... ({len(task.labels)} in all)" if len(task.labels) > 12 else "")
    log.info("task %s%s, model %s", task.name, f", labels {shown}" if task.labels else "", model_path)

    set_seed(cfg.trainer.seed)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, cfg.model.revision)
    # pseudo-labelled training examples are not their file's: cached by their own contents
    sources = {name: None if name == "train" and pseudo else cache.local_source(cfg.task.data, name) for name in splits}
    features = {name: cache.featurize(task, examples, tokenizer, name, cfg.trainer.cache_features, sources[name],
                                      cfg.trainer.featurize_workers)
                for name, examples in splits.items()}
    if not features["train"]:
        raise FtuneError("no training features", where="task.data.train", fix="check the training file")
    features["train"] = stage.mix_replay(cfg, features["train"], stage.replay_features(cfg, task, tokenizer))
    steps = total_steps(len(features["train"]), cfg.trainer, accelerator.num_processes)
    log.info("%s", plan(len(features["train"]), cfg.trainer, accelerator.num_processes))  # what the step rule decided
    constraints.check_steps(cfg, steps, len(features["train"]), accelerator.num_processes)  # before anything is written
    model, extras, head = _build_model(cfg, task, model_path, resume_from, steps, precision, source)
    if cfg.objective.name == "setfit":  # contrastive pairs, then a logistic-regression head (ftune/engine/contrastive.py)
        from ftune.engine import contrastive

        contrastive.check(cfg, task, resume_from)
        model = contrastive.train(model, task, features["train"], cfg.objective, cfg.trainer.seed, accelerator.device)
    extras.insert(0, tokenizer)
    # continual.regularizer: L2-SP / EWC terms anchored to the starting weights, added by the engine's generic hook
    penalties = fisher.terms(cfg, model, source, old_labels, task.labels, head in ("kept", "extended"),
                              accelerator.device)
    # e.g. dpo: the reference log-probabilities of full fine-tuning, before any step (a no-op for most tasks)
    task.prepare(model if resume_from is None or peft.is_active(cfg.peft) else None, features, model_path, accelerator)
    parameters = parameter_counts(model)
    log.info("trainable parameters: %s of %s (%.2f%%)%s", f"{parameters['trainable']:,}", f"{parameters['total']:,}",
             parameters["percent"], f", peft={cfg.peft.name}" if peft.is_active(cfg.peft) else
             (f", freeze={cfg.freeze.name}" if freeze.is_active(cfg.freeze) else ""))

    run_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:  # written only now: a run that fails its checks leaves nothing but its log
        OmegaConf.save(OmegaConf.merge(cfg, {"run_dir": str(run_dir)}), run_dir / "config.yaml", resolve=True)
        R.save_hydra_record(run_dir)

    model = shard(model, cfg.trainer, accelerator)  # FSDP2 (trainer.strategy=fsdp): after PEFT, before the optimizer
    # fused AdamW: one kernel for all parameters; on CPU it is ~10x faster than the per-tensor loop too
    optimizer = build_optimizer(cfg.optimizer, model, fused=accelerator.device.type in ("cuda", "cpu"))
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps)
    engine = Engine(model, task, cfg.trainer, accelerator, optimizer, scheduler, run_dir,
                    build_subscribers(cfg.logger, run_dir if accelerator.is_main_process else None, cfg), extras,
                    step_hook=peft.step_hook(model, cfg.peft), penalties=penalties,
                    watch=stage.watched(cfg, task, tokenizer, earlier))  # continual.every_eval: earlier splits too
    state = None
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from, engine.optimizer, scheduler,
                                         lambda path: engine.strategy.load_optimizer(engine.model, engine.optimizer, path))
        resume.apply(accepted, engine.optimizer, scheduler)
        engine.emit(resume.event(accepted, state.step, resume_from))
        log.info("resuming from %s (step %d)", resume_from, state.step)

    evaluation = (features["validation"], splits["validation"]) if splits["validation"] else None
    samples_before = state.samples if state is not None else 0  # a resumed run counts only its own work
    train_started = time.perf_counter()
    try:
        state = engine.fit(features["train"], evaluation, state)
    except BaseException:
        engine.close()  # trackers end their run as failed (killed after a signal); resume reattaches to it
        raise
    train_seconds = time.perf_counter() - train_started

    # Final figures come from the selected model: best/ (the last model when there is no validation split).
    peft_plugin(cfg.peft.name).load_best(engine, lambda: task.build_model(model_path), run_dir / "best")
    results = {"task": task.name, "model": cfg.model.name, "run_dir": str(run_dir), "main_metric": task.main_metric,
               "greater_is_better": task.greater_is_better,
               "best_step": state.best_step, "steps": state.step, "precision": precision,
               "peft": cfg.peft.name, "freeze": cfg.freeze.name, "parameters": parameters,
               "strategy": engine.strategy.describe(engine.model, engine.optimizer),
               "best_mb": round(sum(f.stat().st_size for f in (run_dir / "best").glob("*.safetensors")) / 2**20, 2),
               "train": _throughput(state.samples - samples_before, engine, train_seconds, len(splits["train"]),
                                    len(features["train"]))}
    if source is not None:  # the chain of runs the weights went through (the card names it)
        results["init_from"] = I.record(source, head)
    if pseudo is not None:
        results["pseudo_labels"] = pseudo
    for split in ("validation", "test"):
        if splits[split]:
            results[split] = engine.evaluate(features[split], splits[split])
            if accelerator.is_main_process:
                R.print_table(task, results[split], f"{split} ({task.name}, {cfg.model.name}, best step {state.best_step})",
                              to_stderr=cfg.output_format == "json")
    # adapters side by side (copied by the main process); earlier runs' metrics then and now (every rank: collective)
    main = accelerator.is_main_process
    adapters = stage.save_adapters(cfg, run_dir, previous, main) if peft.is_active(cfg.peft) else {}
    if previous:
        results["forgetting"] = stage.forgetting_table(cfg, engine, task, tokenizer, earlier, adapters, run_dir, main)
        if main:
            stage.print_forgetting(results["forgetting"], to_stderr=cfg.output_format == "json")
    if accelerator.is_main_process:  # inside/outside the range of a matching reference recipe, in results.json too
        record = recipes.report(cfg, splits, task, results, to_stderr=cfg.output_format == "json")
        if record is not None:
            results["recipe"] = record
    results["seconds"] = round(time.perf_counter() - started, 2)
    results["versions"] = provenance.versions()
    files = [run_dir / "config.yaml", run_dir / "results.json"]
    if accelerator.is_main_process:
        R.write_json(run_dir / "results.json", results)
        if cfg.logger.report:  # report.html (plots) and the model card in best/, from the files just written
            from ftune.card import write_card
            from ftune.report import write_run_report

            files += [write_run_report(run_dir), write_card(run_dir / "best", run_dir=run_dir)]
        if cfg.output_format == "json":
            R.print_json(results)
    engine.emit({"event": "result", "results": results, "files": [str(f) for f in files]})
    engine.close()
    log.info("run directory: %s", run_dir)
    main = results.get("validation", {}).get(task.main_metric)
    return {"optimized_metric": main, **results}


def _build_model(cfg: DictConfig, task: Task, model_path: str, resume_from: Path | None, steps: int,
                 precision: str = "fp32", source: I.Source | None = None):
    """The task's model, wrapped by peft or partly frozen as configured, with init_from's weights or the
    resumed ones loaded; the extra objects every saved model folder needs; and whether init_from's head was
    kept ("kept", "fresh", None without init_from)."""
    from ftune.engine.checkpoint import load_weights

    load = {"trust_remote_code": cfg.model.trust_remote_code,
            "use_safetensors": None if cfg.model.allow_pickle else True}
    if not peft.is_active(cfg.peft):
        model = task.build_model(str(resume_from or model_path), **load)
        head = None
        if source is not None:  # a resumed checkpoint already holds them; the head record is re-derived
            head = I.load_into(model, source, task.labels, task.has_labels) if resume_from is None else \
                I.head_kept(model, source, task.labels, task.has_labels, task.name)
        _gradient_checkpointing(model, cfg)
        freeze.apply(model, cfg.freeze)
        return model, [], head
    from ftune.models import plain_cpu_kernels, quantization_kwargs

    model = task.build_model(model_path, **load, **quantization_kwargs(cfg.model, precision))  # QLoRA: 4/8-bit base
    plain_cpu_kernels(model)
    head = I.load_into(model, source, task.labels, task.has_labels) if source is not None else None
    _gradient_checkpointing(model, cfg)
    model = peft.wrap(model, cfg.peft, steps, peft.added_token_ids(model, model_path))
    if resume_from is not None:
        load_weights(model, resume_from)
    return model, [peft.BaseConfigWriter(model.get_base_model().config)], head


def _gradient_checkpointing(model, cfg: DictConfig) -> None:
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable()  # recomputes activations in backward: less memory, slower steps
        model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
        # with frozen embeddings (PEFT, freeze=embeddings) nothing before the first layer needs a gradient,
        # and re-entrant checkpointing would then back-propagate nothing through the layers
        model.enable_input_require_grads()


def _throughput(samples: int, engine, seconds: float, examples: int, features: int) -> dict:
    """Wall time of fit() and the training rate on the time spent in training steps (evaluations and
    checkpoints taken inside fit() are reported apart)."""
    stepping = max(seconds - engine.seconds["eval"] - engine.seconds["checkpoint"], 1e-9)
    processes = engine.accelerator.num_processes
    return {"examples": examples, "features": features, "processes": processes, "seconds": round(seconds, 2),
            "eval_seconds": round(engine.seconds["eval"], 2), "checkpoint_seconds": round(engine.seconds["checkpoint"], 2),
            "samples_per_s": round(samples * processes / stepping, 2)}


def _check_resumable(checkpoint_dir: Path, labels: list[str]) -> None:
    name = "config.json" if (checkpoint_dir / "config.json").is_file() else peft.BASE_CONFIG
    config = json.loads((checkpoint_dir / name).read_text())
    saved = [config["id2label"][str(i)] for i in range(len(config.get("id2label", {})))]
    if saved != labels:
        raise FtuneError(f"the checkpoint was trained with labels {saved[:6]}..., the data now gives {labels[:6]}...",
                         where="resume", fix="resume with the same data, or start a new run")
