"""FSDP2 set-up, before the engine starts: what trainer.strategy=fsdp refuses here (`check`, before anything
loads) and how the model is cut into sharded units (`shard`, after PEFT and before the optimizer is built,
which must see the sharded parameters). The strategy objects that train the sharded model are in
strategy.py."""

from __future__ import annotations

import logging

import torch

from ftune import registry
from ftune.engine.strategy import parameter_bytes
from ftune.errors import FtuneError

log = logging.getLogger("ftune")


def check(trainer_cfg, model_cfg, peft_cfg) -> None:
    """What FSDP cannot do here, said before anything loads."""
    strategy = trainer_cfg.get("strategy", "ddp")
    registry.lookup(registry.STRATEGIES, strategy)
    if strategy != "fsdp":
        return
    # torch < 2.10: gloo's reduce-scatter summed instead of averaging, silently (the gradients were N times too big)
    if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 10):
        raise FtuneError(f"trainer.strategy=fsdp needs torch >= 2.10, found {torch.__version__}",
                         where="trainer.strategy", fix="pip install 'torch>=2.10', or use trainer.strategy=ddp")
    if trainer_cfg.precision == "fp16":
        raise FtuneError("fp16 under FSDP needs a sharded loss scaler, which ftune does not have",
                         where="trainer.precision", fix="use trainer.precision=bf16 (or fp32) with trainer.strategy=fsdp")
    if model_cfg.get("quantization"):
        raise FtuneError("quantised (bitsandbytes) weights cannot be sharded by FSDP2 in ftune",
                         where="model.quantization", fix="use trainer.strategy=ddp for QLoRA, or model.quantization=null")
    registry.peft_plugin(peft_cfg.name).check_sharding()
    if trainer_cfg.get("compile"):
        raise FtuneError("trainer.compile=true is not tested with FSDP in ftune", where="trainer.compile",
                         fix="use trainer.compile=false with trainer.strategy=fsdp")


def shard(model: torch.nn.Module, trainer_cfg, accelerator) -> torch.nn.Module:
    """`model` sharded with FSDP2 when trainer.strategy=fsdp runs on several processes; else unchanged.

    Units, innermost first: modules whose parameters differ in dtype from the rest (FSDP2 all-gathers one
    flat buffer per unit, of one dtype: peft adapters upcast to fp32 next to a bf16 base), then each
    transformer layer (the model's `_no_split_modules`), then the root, which takes what is left
    (embeddings, head, tied weights).
    """
    if trainer_cfg.get("strategy", "ddp") != "fsdp":
        return model
    if accelerator.num_processes == 1:
        log.info("trainer.strategy=fsdp on one process: nothing to shard, training as usual")
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    model.to(accelerator.device)
    owners: dict[int, int] = {}  # parameter id -> how many modules hold it (tied weights: more than one)
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    base_dtype, units = _main_dtype(model), _no_split_names(model)
    adapters, layers = [], []  # chosen before sharding anything: fully_shard replaces the parameters
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and all(p.dtype != base_dtype and owners[id(p)] == 1 for p in params):
            adapters.append(module)  # e.g. an fp32 adapter next to a bf16 base: a unit of its own
        elif type(module).__name__ in units and all(owners[id(p)] == 1 for p in module.parameters()):
            layers.append(module)
    for module in [*adapters, *layers]:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # transformers' generate() keeps every rank stepping until all are done (synced_gpus) only for models
    # it knows to be sharded; without it a rank that finished early would leave the others' all-gathers hanging
    for module in model.modules():
        if hasattr(module, "generate") and hasattr(module, "config"):
            module._is_fsdp_managed_module = True
    local, full = parameter_bytes(model)
    log.info("FSDP2: %d layers sharded over %d processes; parameters per rank %.1f MB of %.1f MB",
             len(layers), accelerator.num_processes, local / 2**20, full / 2**20)
    return model


def _main_dtype(model: torch.nn.Module) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def _no_split_names(model: torch.nn.Module) -> set[str]:
    """Transformer layer classes, from every transformers model inside (a PeftModel wraps one)."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return names
