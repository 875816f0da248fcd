"""trainer.compile=true: the engine's compiled model takes best/'s weights back (the end of every compiled
run). Compilation is lazy, so this runs no compiler; tests/gpu/test_gpu_engines.py trains compiled on a GPU."""

import torch
from omegaconf import OmegaConf

from ftune.engine.device import make_accelerator
from ftune.engine.loop import Engine
from ftune.registry import defaults
from ftune.tasks.ner import NerTask


def test_a_compiled_engine_loads_best_weights(tiny_model_dir, tiny_ner_data, tmp_path):
    task = NerTask(defaults("task", "ner"))
    task.fit_labels(task.load_file(str(tiny_ner_data["train"]))[:16], {})
    torch.manual_seed(0)
    saved = task.build_model(str(tiny_model_dir))
    saved.save_pretrained(tmp_path / "best")
    torch.manual_seed(1)
    model = task.build_model(str(tiny_model_dir))  # another random head
    cfg = OmegaConf.merge(defaults("trainer", "default"), {"compile": True})
    accelerator, _ = make_accelerator("fp32", "cpu")
    engine = Engine(model, task, cfg, accelerator)
    assert engine.model._compiled_call_impl is not None  # compiled in place (Module.compile): really compiled,
    assert not any(key.startswith("_orig_mod.") for key in engine.model.state_dict())  # with the eager keys
    engine.load_weights(tmp_path / "best")
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
