"""Bad configuration and bad data: exit code 2, one clear line naming the place, nothing but the log written.

Each case runs the real command line in-process (`ftune.cli.main`) and checks the exit code, the message,
and that the run directory holds no checkpoint, no model and no results.
"""

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from ftune import cli

pytestmark = pytest.mark.slow  # each bad input through the whole CLI: make test, not make test-unit

CONLL = "Paris B-LOC\nis O\n\nBob B-PER\nsang O\n"


def _files(tmp: Path) -> dict[str, Path]:
    """Small data files, good and bad, for the cases below."""
    texts = {
        "good.conll": CONLL, "no_tag.conll": "Paris B-LOC\nlonely\n",
        "bad_tag.conll": "Paris X-FOO\n", "unseen.conll": "Anna B-ORG\n", "empty.conll": "\n\n",
        "bioes.conll": "Paris S-LOC\n", "mismatch.jsonl": '{"tokens": ["a", "b"], "tags": ["O"]}\n',
        "broken.jsonl": '{"tokens": ["a"], "tags": ["O"]}\n{broken\n',
        "cls.tsv": "sentence\tlabel\ngood film\tpos\nbad film\tneg\n",
        "cls_nocol.tsv": "text\tlabel\ngood film\tpos\n", "cls_empty.tsv": "sentence\tlabel\n \tpos\nok\tneg\n",
        "cls_unseen.tsv": "sentence\tlabel\nfine\tmeh\n", "cls_one.tsv": "sentence\tlabel\na\tpos\nb\tpos\n",
        "reg.tsv": "sentence\tlabel\ngood\tzero\n", "ml.jsonl": '{"text": "a", "labels": "[broken"}\n',
        "qa_dup.json": json.dumps({"data": [{"paragraphs": [{"context": "Rome is big.", "qas": [
            {"id": "1", "question": "What?", "answers": [{"text": "Rome", "answer_start": 0}]},
            {"id": "1", "question": "Which?", "answers": [{"text": "big", "answer_start": 1}]}]}]}]}),
        "qa_bad.json": '{"not": "squad"}', "rel.jsonl": '{"text": "Anna met Bob", "head": [0, 4], "tail": [2, 7], "label": "x"}\n',
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = tmp / name
        paths[name].write_text(text)
    paths["latin1.conll"] = tmp / "latin1.conll"
    paths["latin1.conll"].write_bytes(b"M\xfcnchen B-LOC\n")
    pickle_only = tmp / "pickle_model"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text("{}")
    (pickle_only / "pytorch_model.bin").write_bytes(b"not really")
    paths["pickle_model"] = pickle_only
    return paths


def _cases(tmp: Path, model: Path) -> list[tuple[list[str], str]]:
    f = _files(tmp)
    ner = [f"model.name_or_path={model}", "task=ner"]

    def data(train, validation=None, task="ner", *extra):
        return [f"model.name_or_path={model}", f"task={task}", f"task.data.train={train}",
                *([f"task.data.validation={validation}"] if validation else []), *extra]

    sst = ["task.data.text_column=sentence"]
    qa = ["task.max_length=128", "task.doc_stride=32"]  # within the tiny model's 128 positions
    return [
        (["train", "trainer.epochz=3"], "unknown config key `trainer.epochz` (did you mean `trainer.epochs`?"),
        (["train", "trainer.epochs=abc"], "trainer.epochs: Value 'abc' of type 'str' could not be converted"),
        (["train", "model=bert"], "unknown model `bert`"),
        (["train", "task=nerr"], "unknown task `nerr`"),
        (["train", "optimizer=adamw2"], "unknown optimizer `adamw2`"),
        (["train", "scheduler=exponential"], "unknown scheduler `exponential`"),
        (["train", "+trainer.foo=1"], "unknown config key `trainer.foo`"),
        (["train", "+optimizer.args.betaz=1"], "`AdamW` takes no argument `betaz` (did you mean `betas`?"),
        (["train", "optimizer=sgd", "+optimizer.args.momentom=0.5"], "did you mean `momentum`"),
        (["train", "trainer.precision=fp8"], "trainer.precision: unknown value `fp8` (choose from: auto, fp32"),
        (["train", "optimizer.lr=-1"], "optimizer.lr: must be > 0, got -1.0"),
        (["train", "scheduler.warmup_ratio=1.5"], "scheduler.warmup_ratio: must be ≥ 0 and < 1, got 1.5"),
        (["train", "peft=lora", "peft.dropout=1.0"], "peft.dropout: must be ≥ 0 and < 1"),
        (["train", *ner, "task.max_length=1000", f"task.data.train={f['good.conll']}"],
         "task.max_length: 1000 tokens exceed the 128 positions of bert"),
        (["eval", "run_dir=x", "batch_size=0"], "batch_size: must be ≥ 1, got 0"),
        (["train", "trainer.batch_size=0"], "trainer.batch_size: must be ≥ 1"),
        (["train", "trainer.nonfinite=maybe"], "trainer.nonfinite: unknown value `maybe`"),
        # plug-in names are the registry's keys (ftune/registry.py), checked when the config is composed
        (["train", "peft=lora", "peft.name=lorra"], "peft.name: unknown peft method `lorra` (did you mean `lora`?"),
        (["train", "optimizer.name=adamv"], "optimizer.name: unknown optimizer `adamv` (did you mean `adamw`?"),
        (["train", "trainer.strategy=zero3"], "trainer.strategy: unknown strategy `zero3`"),
        (["train", "logger.backends=[tensorbord]"], "unknown logger backend `tensorbord`"),
        (["train", *ner, "trainer.device=cuda", f"task.data.train={f['good.conll']}"], "no CUDA GPU"),
        (["train", "model.name_or_path=/nonexistent/model"], "model folder not found"),
        (["train", f"model.name_or_path={f['pickle_model']}"], "only pickle weights"),
        (["train", *data(tmp / "missing.conll")], "task.data.train: file not found"),
        (["train", *data(f["no_tag.conll"])], "no_tag.conll:2: a token with no tag column"),
        (["train", *data(f["bad_tag.conll"])], "bad_tag.conll:1: tag `X-FOO` is not O or B-/I-/E-/S-<TYPE>"),
        (["train", *data(f["good.conll"], f["unseen.conll"])], "unseen.conll:1: label `B-ORG` does not occur"),
        (["train", *data(f["empty.conll"])], "task.data.train: the train split is empty"),
        (["train", *data(f["latin1.conll"])], "latin1.conll:1: bytes that are not UTF-8"),
        (["train", *data(f["bioes.conll"], None, "ner", "task.scheme=IOB2")], "not valid in IOB2"),
        (["train", *data(f["mismatch.jsonl"])], "mismatch.jsonl:1: 2 tokens but 1 tags"),
        (["train", *data(f["broken.jsonl"])], "broken.jsonl:2: invalid JSON"),
        (["train", *data(f["cls_nocol.tsv"], None, "classification", *sst)], "no column `sentence`"),
        (["train", *data(f["cls_empty.tsv"], None, "classification", *sst)], "cls_empty.tsv:2: `sentence` is empty"),
        (["train", *data(f["cls.tsv"], f["cls_unseen.tsv"], "classification", *sst)], "label `meh` does not occur"),
        (["train", *data(f["cls_one.tsv"], None, "classification", *sst)], "a single label `pos`"),
        (["train", *data(f["reg.tsv"], None, "regression", *sst)], "reg.tsv:2: `label`: not a number"),
        (["train", *data(f["ml.jsonl"], None, "multilabel")], "ml.jsonl:1: `labels`: invalid JSON list"),
        (["train", *data(f["qa_dup.json"], None, "qa", *qa)], "duplicate question id `1`"),
        (["train", *data(f["qa_dup.json"], None, "qa", *qa)], "answer 'big' is not found at 1 in its context"),
        (["train", *data(f["qa_bad.json"], None, "qa", *qa)], "not SQuAD JSON"),
        (["train", *data(f["rel.jsonl"], None, "relation")], "rel.jsonl:1: head and tail overlap"),
        (["train", *data(f["good.conll"]), "resume=true"], "no complete checkpoint to resume from"),
        (["train", *data(f["good.conll"], f["empty.conll"])], "task.data.validation: the validation split is empty"),
        (["eval", f"run_dir={tmp / 'not_a_run'}"], "is not an ftune run (no config.yaml)"),
        (["eval", "run_dir=x", "split=dev"], "split: unknown value `dev` (choose from: validation, test, train)"),
        (["eval", f"model={model}"], "a model folder needs its task"),
        (["predict", f"model={model}", "task=ner", f"input={tmp / 'nope.txt'}"], "input file not found"),
        (["data", "check", "task=ner", f"task.data.train={f['bad_tag.conll']}"], "tag `X-FOO`"),
        (["trian"], "unknown command `trian` (did you mean `train`?)"),
    ]


def _run(args: list[str]) -> int:
    GlobalHydra.instance().clear()
    try:
        cli.main(args)
    except SystemExit as stop:
        return stop.code
    finally:
        GlobalHydra.instance().clear()
    return 0


def test_at_least_thirty_cases(tmp_path, tiny_model_dir):
    assert len(_cases(tmp_path, tiny_model_dir)) >= 30


@pytest.mark.parametrize("index", range(47))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(index, tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, expected = _cases(tmp_path, tiny_model_dir)[index]
    run_dir = tmp_path / "run"
    if args[0] == "train":
        args = [*args, f"run_dir={run_dir}", "logger.console=none"]
    code = _run(args)
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("ftune: error:")]
    assert code == 2, err
    assert len(error_lines) == 1 and expected in error_lines[0], err
    assert "Traceback" not in err
    if run_dir.exists():  # at most the log: no config, checkpoint, model or results
        assert sorted(p.name for p in run_dir.iterdir()) in ([], ["train.log"]), list(run_dir.iterdir())


def test_a_refused_resume_leaves_the_run_untouched(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Resuming with a different label set (or model) exits 2 and changes no file of the existing run."""
    import hashlib
    import shutil

    monkeypatch.chdir(tmp_path)
    f = _files(tmp_path)
    run_dir = tmp_path / "run"
    common = [f"model.name_or_path={tiny_model_dir}", "task=ner", "trainer.max_steps=2", "logger.console=none",
              f"run_dir={run_dir}"]
    assert _run(["train", *common, f"task.data.train={f['good.conll']}"]) in (0, None)

    def digests():
        return {p.relative_to(run_dir): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in run_dir.rglob("*") if p.is_file() and p.name != "train.log"}

    before = digests()
    f["good.conll"].write_text("Acme B-ORG\nrose O\n")  # the same file, other labels
    assert _run(["train", *common, f"task.data.train={f['good.conll']}", "resume=true"]) == 2
    assert "the checkpoint was trained with labels" in capsys.readouterr().err
    f["good.conll"].write_text(CONLL)
    other_model = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other_model)
    assert _run(["train", *[c for c in common if not c.startswith("model.")], f"model.name_or_path={other_model}",
                 f"task.data.train={f['good.conll']}", "resume=true"]) == 2
    assert f"resume would change 1 setting(s) of the run: model.name_or_path: {tiny_model_dir} → {other_model}" in (
        capsys.readouterr().err)
    assert _run(["train", *common, f"task.data.train={f['good.conll']}", "resume=true", "optimizer.lr=0.5"]) == 2
    assert "optimizer.lr: 0.0002 → 0.5 (resume with the saved values, accept with resume_allow=[optimizer.lr]" in (
        capsys.readouterr().err)
    assert digests() == before
