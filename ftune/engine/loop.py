"""The training engine: one loop for every task, built on accelerate.

The engine sees a model, a task (through the Protocol in ftune.tasks.base), features, an optimizer and a
scheduler. It owns precision, gradient accumulation, clipping, evaluation, best-checkpoint selection,
early stopping, checkpoints and resume. It knows nothing about NER or any other task.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ftune.data.batching import Batches, Indexed, feature_lengths, train_batches
from ftune.engine import checkpoint as ckpt
from ftune.engine import strategy as strategies
from ftune.engine.checkpoint import TrainState
from ftune.engine.evaluation import Evaluation
from ftune.engine.signals import StopOnSignal
from ftune.engine.steps import epochs_for, plan, steps_per_epoch, total_steps  # noqa: F401 (re-exported)
from ftune.errors import FtuneError, Interrupted
from ftune.tasks.base import Task

log = logging.getLogger("ftune")


def shard(batches: Batches, processes: int, rank: int) -> Batches:
    """This process's share of an epoch's batches. The list is padded by repeating its first batches so
    every process runs the same number of steps (as DistributedSampler does): no process waits forever."""
    if processes == 1:
        return batches
    padded = batches + batches[: (-len(batches)) % processes]
    return padded[rank::processes]


class Engine(Evaluation):
    """Training (fit, its steps, checkpoints); evaluation and prediction come from Evaluation."""

    def __init__(self, model, task: Task, trainer_cfg: Any, accelerator, optimizer=None, scheduler=None,
                 run_dir: Path | None = None, subscribers: list | None = None, extras: list | None = None,
                 step_hook=None, penalties: list | None = None, watch: list | None = None):
        self.task, self.cfg, self.accelerator = task, trainer_cfg, accelerator
        # called with the step number after each optimizer step, gradients still in place (AdaLoRA's ranks)
        self.step_hook = step_hook
        # weight-only terms of the objective (regularisers: L2-SP, EWC): callables → scalar, added once per step
        self.penalties = penalties or []
        # (name, features, examples) evaluated at every evaluation too, logged as <name>/<metric>; never select best/
        self.watch = watch or []
        self.run_dir, self.subscribers, self.extras = run_dir, subscribers or [], extras or []
        self.scheduler = scheduler
        self.strategy = strategies.for_model(model, accelerator)  # ddp, or fsdp for a model ftune sharded
        self.model, self.optimizer = self.strategy.prepare(model, optimizer)
        self.device = accelerator.device
        if trainer_cfg.get("compile"):
            # in place: torch.compile(model)'s wrapper adds `_orig_mod.` to every saved key; dynamic: batch lengths vary
            self.model.compile(dynamic=True)
        self.seconds = {"eval": 0.0, "checkpoint": 0.0}  # time fit() spent outside training steps
        self.last_checkpoint: int | None = None

    # ---- events ---------------------------------------------------------------------------------------
    def emit(self, event: dict) -> None:
        if self.accelerator.is_main_process:
            for subscriber in self.subscribers:
                subscriber(event)

    def close(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()

    # ---- data -----------------------------------------------------------------------------------------
    def _loader(self, features, batches: list) -> DataLoader:
        collate = self.task.collate

        def collate_indexed(items: list[tuple[int, dict]]) -> dict:
            batch = collate([feature for _, feature in items])
            batch["index"] = [index for index, _ in items]
            return batch

        # A private generator: creating an iterator draws a seed from it, and drawing from the global RNG
        # would shift dropout masks whenever a resumed run creates its loader mid-epoch.
        return DataLoader(Indexed(features), batch_sampler=batches, collate_fn=collate_indexed,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.cfg.seed))

    def _to_device(self, batch: dict) -> dict:
        # non_blocking with pinned memory: the copy overlaps with the previous step's kernels
        move = {k: v.to(self.device, non_blocking=True) for k, v in batch["inputs"].items()}
        targets = {k: v.to(self.device, non_blocking=True) for k, v in batch.get("targets", {}).items()}
        return {**batch, "inputs": move, "targets": targets}

    # ---- training -------------------------------------------------------------------------------------
    def fit(self, train: list[dict], evaluation: tuple[list[dict], list[dict]] | None,
            state: TrainState | None = None) -> TrainState:
        """Train until max steps / epochs or early stopping; `state` continues a resumed run exactly."""
        cfg, state = self.cfg, state or TrainState()
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        total = total_steps(len(train), cfg, processes)
        per_epoch = steps_per_epoch(len(train), cfg.batch_size, cfg.grad_accum, processes)
        self.emit({"event": "start", "total_steps": total, "epochs": math.ceil(total / per_epoch),
                   "train_examples": len(train), "processes": processes,
                   "precision": {"no": "fp32"}.get(self.accelerator.mixed_precision, self.accelerator.mixed_precision),
                   "initial_step": state.step})
        reason = "max steps reached"
        self.model.train()
        with StopOnSignal() as self.stop:
            reason = self._loop(train, evaluation, state, total, per_epoch, processes, rank, self.stop) or reason
        if evaluation is None and self.run_dir is not None:  # nothing to select on: the last model is best
            self._save_best(state.step)
        self.emit({"event": "end", "step": state.step, "reason": reason})
        return state

    def _loop(self, train, evaluation, state, total, per_epoch, processes, rank, stop) -> str | None:
        cfg, lengths = self.cfg, feature_lengths(train)
        params = [p for p in self.model.parameters() if p.requires_grad]
        window = {"loss": torch.zeros((), device=self.device), "targets": torch.zeros((), device=self.device),
                  "samples": 0, "tokens": 0, "padded": 0, "time": time.perf_counter()}
        while state.step < total:
            batches = train_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.group_by_length)
            batches = shard(batches, processes, rank)
            # an optimizer step ("chunk") is grad_accum batches; a resumed run starts at its epoch's next chunk
            steps_in_epoch = -(-len(batches) // cfg.grad_accum)
            micro = iter(self._loader(train, batches[state.chunk * cfg.grad_accum:]))
            for first in range(state.chunk * cfg.grad_accum, len(batches), cfg.grad_accum):
                chunk = batches[first:first + cfg.grad_accum]
                if not self._train_step([next(micro) for _ in range(len(chunk))], params, window, state.step + 1):
                    if cfg.nonfinite == "stop":
                        saved = (f"the last checkpoint (step {self.last_checkpoint}) is intact" if self.last_checkpoint
                                 else "no checkpoint was saved yet")
                        raise FtuneError(f"loss or gradients are not finite (NaN/inf) at step {state.step + 1}, "
                                         f"epoch {state.epoch + 1}; {saved}", where="training",
                                         fix="lower optimizer.lr, check the data, or trainer.nonfinite=skip")
                    state.skipped += 1
                    log.warning("step %d: loss or gradients not finite, update skipped (%d so far)",
                                state.step + 1, state.skipped)
                state.step += 1
                state.chunk += 1
                state.samples += int(chunk.sizes().sum())
                epoch_end = state.chunk == steps_in_epoch
                if epoch_end:
                    state.epoch, state.chunk = state.epoch + 1, 0
                last = state.step >= total
                self.emit({"event": "step", "step": state.step})
                if state.step % cfg.log_every == 0 or epoch_end or last:
                    self._log_train(state, total, per_epoch, window)
                paused = time.perf_counter()  # evaluation and saving do not count in train throughput
                early = False
                if evaluation and ((cfg.eval_every and state.step % cfg.eval_every == 0) or epoch_end or last):
                    early = self._evaluate_and_select(state, *evaluation)
                if (cfg.save_every and state.step % cfg.save_every == 0) or epoch_end or last or early or stop.agreed:
                    self.save_checkpoint(state)
                window["time"] += time.perf_counter() - paused
                if stop.agreed:
                    self.emit({"event": "end", "step": state.step, "reason": f"signal {stop.agreed}"})
                    raise Interrupted(stop.agreed, f"stopped by signal {stop.agreed} after step {state.step}; "
                                      f"checkpoint saved: continue with resume=true run_dir={self.run_dir}")
                if early:
                    return f"early stopping: no improvement in {cfg.patience} evaluations"
                if last:
                    return None
        return None

    def _train_step(self, micro_batches: list[dict], params: list, window: dict, step: int) -> bool:
        """One optimizer step over several micro-batches, with the loss normalised over all their targets.

        Each micro-batch backpropagates its *summed* loss; the gradients are divided by the step's total
        number of targets afterwards. So k micro-batches give exactly the update of one batch of their union,
        however unevenly the targets (e.g. real tokens) are spread over them. Returns False when the loss or
        the gradients were not finite and the update was not applied.
        """
        step_loss = torch.zeros((), device=self.device)
        step_targets = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro_batches):
            batch = self._to_device(batch)
            last = i == len(micro_batches) - 1
            with self.strategy.no_sync(self.model, last):
                _, loss_sum, targets = self._forward(self.model, batch)
                self.accelerator.backward(loss_sum)
            step_loss += loss_sum.detach().float()
            step_targets += targets
            window["samples"] += len(batch["index"])
            window["tokens"] += batch["tokens"]
            window["padded"] += batch["inputs"]["input_ids"].numel()
        self.accelerator.unscale_gradients()  # fp16: undo the loss scale before dividing and clipping
        # One collective for what all ranks must agree on: the step's targets, its loss (a NaN on any rank
        # makes the sum NaN, so every rank skips or stops at the same step) and whether a rank got a signal.
        shared = self.accelerator.reduce(torch.stack([step_targets, step_loss, *self.stop.flags(self.device)]), "sum")
        global_targets, global_loss = shared[0], shared[1]
        # DDP and FSDP average gradients over processes, so multiply back by their number.
        scale = self.accelerator.num_processes / global_targets.clamp(min=1)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale.to(grads[0].dtype))
        if self.penalties:  # the same weights on every rank: their gradients need no reduction
            penalty = torch.stack([term() for term in self.penalties]).sum()
            penalty.backward()
            window["penalty"] = penalty.detach()
            grads = [p.grad for p in params if p.grad is not None]
        norm = self.strategy.grad_norm(grads)  # of the whole gradient, also when it is sharded
        # fp16's loss scaler expects (and handles) overflowing gradients: the check is for the other precisions
        check = self.cfg.nonfinite != "ignore" and self.accelerator.mixed_precision != "fp16"
        # a host sync, once per step, when checking or when several ranks must agree on a signal
        finite = self.stop.agree(torch.isfinite(norm) & torch.isfinite(global_loss), shared[2:], check,
                                 self.accelerator.num_processes)
        if check and not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grads_with_norm_(params, self.cfg.max_grad_norm, norm)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        if self.step_hook is not None:
            self.step_hook(step)
        self.optimizer.zero_grad(set_to_none=True)
        window["loss"] += global_loss  # logged: the loss over every rank's targets, as one process would
        window["targets"] += global_targets
        window["norm"] = norm  # of the last step, before clipping
        return True

    def _forward(self, model, batch: dict) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(outputs, loss sum, targets): the task's `forward` (one pass + loss, or the passes it needs: dpo)."""
        return self.task.forward(model, batch)

    def _log_train(self, state: TrainState, total: int, per_epoch: int, window: dict) -> None:
        # .item() is a host-device sync: done only here, at the log cadence
        loss = (window["loss"] / window["targets"].clamp(min=1)).item()
        seconds = max(time.perf_counter() - window["time"], 1e-9)
        self.emit({"event": "train", "step": state.step, "total_steps": total,
                   "epoch": round(state.epoch + state.chunk / per_epoch, 4), "loss": loss,
                   "lr": self.scheduler.get_last_lr()[0],
                   # every process runs the same number of equally sized steps: scale to the global rate
                   "samples_per_s": window["samples"] * self.accelerator.num_processes / seconds,
                   "tokens_per_s": window["tokens"] * self.accelerator.num_processes / seconds,
                   "padding_ratio": 1 - window["tokens"] / max(window["padded"], 1),
                   "grad_norm": float(window["norm"]) if "norm" in window else None,
                   "skipped_steps": state.skipped, **self.task.train_stats(),
                   **({"penalty": float(window.pop("penalty"))} if "penalty" in window else {})})
        window.update(loss=torch.zeros((), device=self.device), targets=torch.zeros((), device=self.device),
                      samples=0, tokens=0, padded=0, time=time.perf_counter())

    def _evaluate_and_select(self, state: TrainState, features: list[dict], examples: list[dict]) -> bool:
        """Evaluate, keep best/ up to date, and say whether early stopping should end the run."""
        if state.last_eval_step == state.step:
            return False
        started = time.perf_counter()
        metrics = self.evaluate(features, examples)
        watched = {f"{name}/{k}": v for name, more, rows in self.watch for k, v in self.evaluate(more, rows).items()
                   if isinstance(v, int | float)}
        self.seconds["eval"] += time.perf_counter() - started
        state.last_eval_step = state.step
        value = metrics[self.task.main_metric]
        better = state.best_metric is None or (
            value > state.best_metric if self.task.greater_is_better else value < state.best_metric)
        if better:
            state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
            if self.run_dir is not None:
                self._save_best(state.step)
        else:
            state.bad_evals += 1
        flat = {**{f"val/{k}": v for k, v in metrics.items() if isinstance(v, int | float)}, **watched}
        self.emit({"event": "eval", "step": state.step, "epoch": state.epoch, **flat, "is_best": better,
                   "eval_seconds": time.perf_counter() - started})
        return bool(self.cfg.patience) and state.bad_evals >= self.cfg.patience

    def _save_best(self, step: int) -> None:
        weights = self.strategy.model_state(self.model)  # every rank: under FSDP a gather
        if self.accelerator.is_main_process:
            ckpt.save_model_folder(self.run_dir / "best", self.accelerator.unwrap_model(self.model), self.extras, weights)
            self.emit({"event": "save", "kind": "best", "step": step, "path": str(self.run_dir / "best")})

    def save_checkpoint(self, state: TrainState) -> None:
        started = time.perf_counter()
        if self.run_dir is not None:
            folder, main = self.run_dir / "checkpoints", self.accelerator.is_main_process
            weights = self.strategy.model_state(self.model)  # gathers are collectives: every rank calls them
            if main:
                ckpt.start(folder, state.step)
            self.accelerator.wait_for_everyone()
            # FSDP: each rank writes its optimizer shard into the staging folder; DDP: rank 0 gets the state
            optimizer = self.strategy.save_optimizer(self.model, self.optimizer, ckpt.staging(folder, state.step))
            self.accelerator.wait_for_everyone()
            if main:
                path = ckpt.save(folder, self.accelerator.unwrap_model(self.model), optimizer, self.scheduler, state,
                                 self.cfg.keep_last, self.extras, weights)
                self.emit({"event": "save", "kind": "checkpoint", "step": state.step, "path": str(path)})
        self.accelerator.wait_for_everyone()
        self.last_checkpoint = state.step
        self.seconds["checkpoint"] += time.perf_counter() - started

    def load_weights(self, folder: Path) -> None:
        self.strategy.load_weights(self.model, folder)
