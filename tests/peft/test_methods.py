"""PEFT methods and freezing strategies: only the intended weights train; adapter-only checkpoints; resume;
eval/predict on adapter runs; export with the adapter merged, loadable without peft."""

import json
import subprocess
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load_file

from ftune import cli
from ftune import peft as ftune_peft
from ftune.commands import train
from ftune.errors import FtuneError
from tests.conftest import crash_at_step, run_cli, write_data

SENTENCES = ["a great and moving film", "dull , slow and far too long", "the best thing this year",
             "an awful mess", "warm , funny and wise", "nothing works here"] * 4

# which parameter names may train, per method (peft's names) or freezing strategy (the model's own names)
INTENDED = {
    "peft=lora": lambda n: "lora_" in n or "modules_to_save" in n,
    "peft=adalora": lambda n: "lora_" in n or "modules_to_save" in n,
    "peft=ia3": lambda n: "ia3_l" in n or "modules_to_save" in n,
    "peft=prefix_tuning": lambda n: "prompt_encoder" in n or "modules_to_save" in n,
    "peft=prompt_tuning": lambda n: "prompt_encoder" in n or "modules_to_save" in n,
    "freeze=head_only": lambda n: not n.startswith("bert."),
    "freeze=bitfit": lambda n: not n.startswith("bert.") or n.endswith(".bias"),
    "freeze=embeddings": lambda n: not n.startswith("bert.embeddings."),
    "freeze=bottom_layers": lambda n: not n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")),
}


@pytest.fixture(scope="module")
def classification_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "data.jsonl"
    path.write_text("".join(json.dumps({"text": s, "label": "pos" if i % 2 else "neg"}) + "\n"
                            for i, s in enumerate(SENTENCES)))
    return path


def _data(task: str, tiny_ner_data, classification_file) -> list[str]:
    if task == "ner":
        return [f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}"]
    return [f"task.data.train={classification_file}", f"task.data.validation={classification_file}"]


def _train_in_memory(cfg, model_dir):
    """What `ftune train` does up to the end of fit(), keeping the live model for inspection."""
    from ftune.engine.device import make_accelerator
    from ftune.engine.loop import Engine
    from ftune.models import load_tokenizer
    from ftune.optim import build_optimizer, build_scheduler
    from ftune.registry import build_task

    torch.manual_seed(0)
    task = build_task(cfg.task)
    examples = task.load_split("train")
    task.fit_labels(examples, {})
    features = task.featurize(examples, load_tokenizer(str(model_dir)))
    model, _, _ = train._build_model(cfg, task, str(model_dir), None, cfg.trainer.max_steps)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(cfg.optimizer, model)
    accelerator, _ = make_accelerator("fp32", "cpu")
    engine = Engine(model, task, cfg.trainer, accelerator, optimizer,
                    build_scheduler(cfg.scheduler, optimizer, cfg.trainer.max_steps),
                    step_hook=ftune_peft.step_hook(model, cfg.peft))
    engine.fit(features, None)
    return model, before


@pytest.mark.parametrize("task", ["ner", "classification"])
@pytest.mark.parametrize("method", list(INTENDED))
def test_only_the_intended_weights_train(method, task, compose_config, tiny_model_dir, tiny_ner_data,
                                         classification_file, tmp_path):
    overrides = [f"task={task}", *_data(task, tiny_ner_data, classification_file), method,
                 f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "trainer.max_steps=3",
                 "trainer.batch_size=8", "optimizer.lr=1e-2", "logger.console=none", f"run_dir={tmp_path}"]
    if method == "freeze=bottom_layers":
        overrides.append("freeze.bottom_layers=1")
    if method == "peft=adalora":
        overrides += ["peft.tinit=0.3", "peft.tfinal=0.3", "peft.deltaT=1"]
    if method == "peft=prefix_tuning":  # not with the locked transformers/peft on encoders: refused at start-up
        with pytest.raises(FtuneError, match=r"prefix tuning cannot drive Bert\w+ with transformers"):
            _train_in_memory(compose_config("train", overrides), tiny_model_dir)
        return
    model, before = _train_in_memory(compose_config("train", overrides), tiny_model_dir)

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(INTENDED[method](n) for n in trainable), sorted(trainable)[:5]
    assert any("classifier" in n for n in trainable)  # the task head always trains
    for name, param in model.named_parameters():
        if name in trainable:
            continue
        assert torch.equal(param.detach(), before[name]), f"frozen weight {name} changed"
    moved = [n for n in trainable if not torch.equal(dict(model.named_parameters())[n].detach(), before[n])]
    assert len(moved) >= len(trainable) // 2, f"only {len(moved)} of {len(trainable)} trainable tensors moved"
    frozen = sum(p.numel() for n, p in model.named_parameters() if n not in trainable and ".original_module." not in n)
    assert frozen > 0



@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, tiny_ner_data):
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    run_cli("train", "task=ner", "peft=lora", f"task.data.train={tiny_ner_data['train']}",
           f"task.data.validation={tiny_ner_data['validation']}", f"model.name_or_path={tiny_model_dir}",
           "model.name=tiny", "trainer.max_steps=6", "trainer.save_every=3", "trainer.batch_size=8",
           "optimizer.lr=1e-2", "logger.console=none", f"run_dir={run_dir}")
    return run_dir


def test_lora_run_saves_only_what_trains(lora_run):
    results = json.loads((lora_run / "results.json").read_text())
    parameters = results["parameters"]
    assert results["peft"] == "lora" and 0 < parameters["trainable"] < parameters["total"]
    for folder in (lora_run / "best", lora_run / "checkpoints" / "step-6"):
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "base_config.json").is_file()
        assert not (folder / "model.safetensors").exists() and not (folder / "config.json").exists()
    saved = load_file(lora_run / "best" / "adapter_model.safetensors")
    assert saved and all("lora_" in k or "classifier" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) == parameters["trainable"]
    optimizer = torch.load(lora_run / "checkpoints" / "step-6" / "optimizer.pt", weights_only=True)
    assert len(optimizer["state"]) == len(saved)  # optimizer state only for the trained tensors


def test_eval_predict_and_peft_loaders_read_the_adapter(lora_run, tmp_path):
    from peft import AutoPeftModelForTokenClassification

    run_cli("eval", f"run_dir={lora_run}", "split=validation")
    evaluated = json.loads((lora_run / "eval_validation.json").read_text())
    assert evaluated["f1"] == pytest.approx(json.loads((lora_run / "results.json").read_text())["validation"]["f1"])
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("Angela Merkel visited Paris .\n")
    run_cli("predict", f"run_dir={lora_run}", f"input={source}", f"output={target}")
    assert "entities" in json.loads(target.read_text())

    labels = json.loads((lora_run / "best" / "base_config.json").read_text())["id2label"]
    model = AutoPeftModelForTokenClassification.from_pretrained(str(lora_run / "best"), id2label=labels)
    assert model.config.num_labels == len(labels)


@pytest.mark.slow
def test_export_merge_gives_the_adapter_runs_outputs_without_peft(lora_run, tmp_path):
    from omegaconf import OmegaConf

    from ftune import run as R

    out = tmp_path / "merged"
    run_cli("export", f"run_dir={lora_run}", "merge=true", f"out={out}")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()

    task, tokenizer, adapter_model, *_ = R.load_inference(OmegaConf.create(
        {"run_dir": str(lora_run), "model_dir": None, "task": None, "checkpoint": "best"}))
    text = "Angela Merkel visited Paris ."
    with torch.inference_mode():
        expected = adapter_model.eval()(**tokenizer(text, return_tensors="pt")).logits
    # a fresh interpreter that cannot import peft: the merged folder is a plain transformers model
    script = (
        "import sys, json; sys.modules['peft'] = None\n"
        "from transformers import pipeline, AutoModelForTokenClassification, AutoTokenizer\n"
        f"folder = {str(out)!r}\n"
        "model = AutoModelForTokenClassification.from_pretrained(folder)\n"
        f"logits = model(**AutoTokenizer.from_pretrained(folder)({text!r}, return_tensors='pt')).logits\n"
        f"pipeline('token-classification', model=folder)({text!r})\n"
        "print(json.dumps(logits.tolist()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    merged = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)

    adapter_out = tmp_path / "adapter"
    run_cli("export", f"run_dir={lora_run}", f"out={adapter_out}")
    assert (adapter_out / "adapter_model.safetensors").is_file()


def test_resume_of_a_lora_run_matches_an_uninterrupted_one(lora_run, compose_config, tiny_model_dir, tiny_ner_data,
                                                           tmp_path):
    args = ["task=ner", "peft=lora", f"task.data.train={tiny_ner_data['train']}",
            f"task.data.validation={tiny_ner_data['validation']}", f"model.name_or_path={tiny_model_dir}",
            "model.name=tiny", "trainer.max_steps=6", "trainer.save_every=3", "trainer.batch_size=8",
            "optimizer.lr=1e-2", "logger.console=none", f"run_dir={tmp_path / 'run'}"]
    with crash_at_step(4), pytest.raises(RuntimeError, match="simulated crash"):
        train.run(compose_config("train", args))
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-3"
    train.run(compose_config("train", [*args, "resume=true"]))
    for folder in ("best", "checkpoints/step-6"):
        a = load_file(lora_run / folder / "adapter_model.safetensors")
        b = load_file(tmp_path / "run" / folder / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder


@pytest.mark.parametrize("overrides, message", [
    (["task=relation", "peft=ia3"], r"adds \d+ token"),
    (["peft=lora", "freeze=bitfit"], "already freezes"),
    (["peft=lora", "+peft.args.rank=4"], "has no field `rank`"),
    (["peft=adalora", "peft.tinit=0.7", "peft.tfinal=0.7"], "AdaLoRA needs steps"),
    (["peft=prompt_tuning", "peft.init=text"], "needs the text"),
    (["peft=lora", "peft.target_modules=[nothing_here]"], "does not fit"),
])
def test_methods_that_do_not_fit_fail_at_start_up(overrides, message, compose_config, tiny_model_dir,
                                                   tiny_ner_data, tmp_path):
    cfg = compose_config("train", [*overrides, f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
                                   f"task.data.train={tiny_ner_data['train']}", "trainer.max_steps=3",
                                   "logger.console=none", f"run_dir={tmp_path / 'run'}"])
    if cfg.task.name == "relation":
        rows = [{"text": f"Anna met Bob in Rome {s}", "head": [0, 4], "tail": [9, 12], "label": ["met", "no_relation"][i % 2]}
                for i, s in enumerate(SENTENCES)]
        write_data(tmp_path / "rel.jsonl", rows)
        cfg.task.data.train = str(tmp_path / "rel.jsonl")
    with pytest.raises(FtuneError, match=message):
        train.run(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written but the log


def test_lora_trains_the_tokens_a_task_adds_and_saves_only_their_rows(tiny_model_dir, tmp_path):
    rows = [{"text": f"Anna met Bob in Rome {s}", "head": [0, 4], "tail": [9, 12], "label": ["met", "no_relation"][i % 2]}
            for i, s in enumerate(SENTENCES)]
    data = tmp_path / "rel.jsonl"
    write_data(data, rows)
    run_dir = tmp_path / "run"
    run_cli("train", "task=relation", "peft=lora", f"task.data.train={data}", f"task.data.validation={data}",
           f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "trainer.max_steps=4", "trainer.batch_size=8",
           "optimizer.lr=1e-2", "logger.console=none", f"run_dir={run_dir}")
    saved = load_file(run_dir / "best" / "adapter_model.safetensors")
    deltas = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert len(deltas) == 1 and deltas[0].shape[0] == 4  # the four entity markers
    assert not any("base_layer" in k for k in saved)  # not the whole embedding matrix
    run_cli("eval", f"run_dir={run_dir}")
    trained = json.loads((run_dir / "results.json").read_text())["validation"]["loss"]
    assert json.loads((run_dir / "eval_validation.json").read_text())["loss"] == pytest.approx(trained, abs=1e-6)


def test_export_usage_errors_exit_2(lora_run, tmp_path):
    def code(*args):
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as stopped:
            cli.main(list(args))
        GlobalHydra.instance().clear()
        return stopped.value.code

    assert code("export", f"run_dir={lora_run}") == 2  # out= missing
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert code("export", f"run_dir={lora_run}", f"out={tmp_path / 'taken'}") == 2
    assert (tmp_path / "taken" / "file").read_text() == "x"
    with pytest.raises(FtuneError, match="cannot be merged"):
        ftune_peft.merge(None, "PROMPT_TUNING")
