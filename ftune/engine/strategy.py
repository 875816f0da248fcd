"""How the model is spread over processes: whole on every rank (data parallel, DDP through accelerate) or
sharded (FSDP2, `torch.distributed.fsdp.fully_shard`, applied by ftune itself: accelerate turns FSDP on
only on accelerators, and the same code must run on gloo CPU processes and NCCL GPUs).

The engine talks to a strategy through a few small functions (prepare, grad_norm, model_state, ...), so
the step loop has no backend branches. The model is sharded before that by engine/sharding.py (called by
`ftune train` after PEFT and before the optimizer is built); the engine recognises a sharded model and
picks `FullySharded` for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

import torch

from ftune import registry
from ftune.errors import FtuneError

log = logging.getLogger("ftune")


def inference(method):
    """An Engine method run under its strategy's inference context (inference mode, or no_grad)."""

    @functools.wraps(method)
    def wrapped(engine, *args, **kwargs):
        with engine.strategy.inference():
            return method(engine, *args, **kwargs)

    return wrapped


def for_model(model: torch.nn.Module, accelerator) -> DataParallel:
    from torch.distributed.fsdp import FSDPModule

    return FullySharded(accelerator) if isinstance(model, FSDPModule) else DataParallel(accelerator)


@registry.strategy("ddp")  # the whole model on each process
class DataParallel:
    """Whole parameters on every rank: accelerate wraps the model in DDP when there are several processes."""

    name = "ddp"

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def prepare(self, model, optimizer):
        if optimizer is None:
            return self.accelerator.prepare(model), None
        return self.accelerator.prepare(model, optimizer)

    def no_sync(self, model, last: bool):
        """DDP all-reduces gradients only on the step's last micro-batch."""
        return contextlib.nullcontext() if last else self.accelerator.no_sync(model)

    def grad_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads:
            return torch.zeros((), device=self.accelerator.device)
        return torch.nn.utils.get_total_norm(grads)

    def inference(self):
        return torch.inference_mode()

    def eval_padding(self, share: list, every: list) -> list:
        """Extra batches each rank must run so that all ranks run the same number of forward passes."""
        return []

    def model_state(self, model) -> dict | None:
        """The full state dict to save, or None: every rank holds the whole model, saved as it is."""
        return None

    def save_optimizer(self, model, optimizer, folder: Path) -> dict | None:
        """The optimizer state for rank 0 to save as optimizer.pt (every rank holds all of it)."""
        return optimizer.state_dict()

    def load_optimizer(self, model, optimizer, checkpoint: Path) -> None:
        if not (checkpoint / "optimizer.pt").is_file() and any(checkpoint.glob("optimizer-rank*")):
            raise FtuneError(f"{checkpoint} holds a sharded (FSDP) optimizer state", where="resume",
                             fix="resume with trainer.strategy=fsdp and as many processes as the run was saved with")
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))

    def load_weights(self, model, folder: Path) -> None:
        from ftune.engine.checkpoint import load_weights

        # trainer.compile=true: the compiled wrapper's keys carry `_orig_mod.`, best/ holds the model's own
        # (save_pretrained reaches through the wrapper); accelerate's unwrap keeps the wrapper, so it goes here
        model = self.accelerator.unwrap_model(model)
        load_weights(getattr(model, "_orig_mod", model), folder)

    def describe(self, model, optimizer=None) -> dict:
        """What each rank holds, measured on the tensors themselves (shards under FSDP)."""
        local, _ = parameter_bytes(self.accelerator.unwrap_model(model))
        states = [t for s in (_inner(optimizer).state.values() if optimizer is not None else []) for t in s.values()
                  if torch.is_tensor(t)]
        held = sum(_local(t).numel() * t.element_size() for t in states)
        return {"name": self.name, "processes": self.accelerator.num_processes,
                "parameter_mb_per_rank": round(local / 2**20, 3), "optimizer_state_mb_per_rank": round(held / 2**20, 3)}


@registry.strategy("fsdp")  # FSDP2: parameters, gradients, optimizer state sharded
class FullySharded(DataParallel):
    """FSDP2: each rank holds 1/N of every parameter, gradient and optimizer state (DTensors). Whole
    parameters exist only inside a unit's forward and backward; saves gather them with collectives
    that every rank must call, in the same order."""

    name = "fsdp"

    def prepare(self, model, optimizer):
        # evaluation_mode: accelerate's autocast and device placement, without its DDP wrapper
        model = self.accelerator.prepare_model(model, evaluation_mode=True)
        return model, (self.accelerator.prepare(optimizer) if optimizer is not None else None)

    def no_sync(self, model, last: bool):
        # every micro-batch reduce-scatters its gradients: keeping them unsharded until the last one
        # would hold a whole model's gradients on each rank, what FSDP is there to avoid
        return contextlib.nullcontext()

    def grad_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads:
            return torch.zeros((), device=self.accelerator.device)
        norm = torch.nn.utils.get_total_norm(grads)  # a DTensor over the shards: the global norm on all ranks
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def inference(self):
        # FSDP's unshard writes into parameters, which inference mode forbids
        return torch.no_grad()

    def eval_padding(self, share: list, every: list) -> list:
        # each forward pass all-gathers parameters: a rank with one batch less would leave the others waiting
        most = -(-len(every) // self.accelerator.num_processes)
        return [(share or every)[0]] * (most - len(share))

    def model_state(self, model) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # a collective: every rank gathers, rank 0 gets the full dict on the CPU, the others an empty one
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save_optimizer(self, model, optimizer, folder: Path) -> None:
        """Each rank writes its own shard of the optimizer state (never gathered: for a large model the whole
        state would not fit one host), as plain tensors keyed by parameter name."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(model, _inner(optimizer), options=StateDictOptions(cpu_offload=True))
        state["state"] = {name: {k: _local(v).cpu() if torch.is_tensor(v) else v for k, v in values.items()}
                          for name, values in state["state"].items()}
        path = folder / self._shard_name()
        torch.save(state, path)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return None

    def load_optimizer(self, model, optimizer, checkpoint: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        from torch.distributed.tensor import DTensor

        path = checkpoint / self._shard_name()
        if not path.is_file():
            saved = sorted(p.name for p in checkpoint.glob("optimizer*"))
            raise FtuneError(f"{checkpoint} holds the optimizer state of another number of processes ({saved[:2]}), "
                             f"not of {self.accelerator.num_processes}", where="resume",
                             fix="resume with as many processes as the run was saved with")
        state = torch.load(path, weights_only=True)
        params = dict(model.named_parameters())
        for name, values in state["state"].items():  # the shards back into DTensors laid out as the parameters
            param = params[name]
            for key, value in values.items():
                if torch.is_tensor(value) and value.shape == param.to_local().shape and value.dim() > 0:
                    values[key] = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                                     run_check=False, shape=param.shape, stride=param.stride())
        set_optimizer_state_dict(model, _inner(optimizer), optim_state_dict=state, options=StateDictOptions())

    def _shard_name(self) -> str:
        return f"optimizer-rank{self.accelerator.process_index}-of-{self.accelerator.num_processes}.pt"

    def load_weights(self, model, folder: Path) -> None:
        """A saved folder (full model or adapter) into the sharded model; every rank reads it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from ftune import peft

        options = StateDictOptions(full_state_dict=True, strict=False)
        if peft.is_adapter_folder(folder):
            # peft maps the adapter file's names onto the model's and then calls load_state_dict, which
            # cannot copy whole tensors into shards: route that call through the sharding-aware loader
            def routed(state, strict=False, **_):
                del model.load_state_dict  # set_model_state_dict calls the module's own load_state_dict
                return set_model_state_dict(model, state, options=options)

            model.load_state_dict = routed
            try:
                peft.load_adapter_weights(model, folder)
            finally:
                model.__dict__.pop("load_state_dict", None)
            return
        from safetensors.torch import load_file

        state = {}
        for file in sorted(Path(folder).glob("*.safetensors")):
            state.update(load_file(file))
        result = set_model_state_dict(model, state, options=options)
        if result.unexpected_keys:
            raise FtuneError(f"weights in {folder} do not fit the model (unexpected {result.unexpected_keys[:3]})",
                             where="checkpoint")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the real one


def parameter_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes of parameters held by this rank, bytes of the whole parameters)."""
    local = full = 0
    for p in model.parameters():
        held = p.to_local() if hasattr(p, "to_local") else p
        local += held.numel() * held.element_size()
        full += p.numel() * p.element_size()
    return local, full
