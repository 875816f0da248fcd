"""Several processes (torchrun, `accelerate launch`): what every rank must agree on before training.

The engine shards the work (ftune.engine.loop); this module makes the ranks agree on one run folder and
one configuration, rank 0 deciding. Tokenising once is the feature cache's file lock (ftune.data.cache).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ftune")


def shared_output_dirs(args: list[str]) -> list[str]:
    """Under torchrun or `accelerate launch` each rank composes its own config, and `${now:...}` in the run
    folder would give each rank its own folder. Rank 0 resolves Hydra's run and sweep folders once and
    every rank passes them on as overrides: one folder for all ranks, created by every Hydra alike."""
    from hydra import compose, initialize_config_module
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    state = process_group(args)
    dirs = [None, None]
    if state.is_main_process:
        setup_globals()  # registers ${now:}
        overrides = [a for a in args if not a.startswith("-")]
        with initialize_config_module("ftune.configs", version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        for i, key in enumerate(("hydra.run.dir", "hydra.sweep.dir")):
            try:
                dirs[i] = str(OmegaConf.select(cfg, key))
            except Exception:  # a folder made of runtime values (${hydra.job.id}): Hydra resolves it, not us
                dirs[i] = None
    from accelerate.utils import broadcast_object_list

    run, sweep = broadcast_object_list(dirs)
    return [*args, *(f"{key}='{_escaped(value)}'" for key, value in (("hydra.run.dir", run), ("hydra.sweep.dir", sweep))
                     if value is not None)]


def process_group(args: list[str]):
    """accelerate's PartialState: it joins the process group torchrun set up, and the Accelerator the
    engine builds later reuses it. CPU processes (gloo) when there is no GPU or trainer.device=cpu."""
    import torch
    from accelerate import PartialState

    on_cpu = not torch.cuda.is_available() or "trainer.device=cpu" in args
    return PartialState(cpu=on_cpu)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def share_from_main(accelerator, cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, Path]:
    """Rank 0's config and run folder for every rank. A sweep launched under torchrun runs its sweeper on
    every rank; this makes each trial's hyper-parameters the ones rank 0 sampled, whatever the others drew."""
    if accelerator.num_processes == 1:
        return cfg, run_dir
    from accelerate.utils import broadcast_object_list

    mine = OmegaConf.to_container(cfg, resolve=True)
    shared, folder = broadcast_object_list([mine, str(run_dir)])
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)  # one process tells the story; the others speak up only about problems
        # run_dir itself may hold ${now:%f} and differ; the folder used is `folder`, shared above
        if {**shared, "run_dir": None} != {**mine, "run_dir": None}:
            log.warning("rank %d: its sweeper drew another configuration; using rank 0's", accelerator.process_index)
    return OmegaConf.create(shared), Path(folder)
