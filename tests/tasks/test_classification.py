"""Sequence-level tasks: metrics against hand counts, readers and label parsing with file:line errors,
truncation counting, loss units, and one tiny end-to-end run per task (plus eval/predict for one)."""

import json
import logging
import math
import random
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from ftune.data.readers import read_table
from ftune.errors import FtuneError
from ftune.registry import defaults as group_defaults
from ftune.tasks import sequence_metrics as M
from ftune.tasks.classification import ClassificationTask, PairClassificationTask
from ftune.tasks.multilabel import MultilabelTask
from ftune.tasks.regression import RegressionTask
from ftune.tasks.sequence_data import label_list, sort_labels
from tests.conftest import write_data

OPTIONS = {ClassificationTask: "classification", PairClassificationTask: "pair_classification",
           RegressionTask: "regression", MultilabelTask: "multilabel"}


def make(cls, **overrides):
    defaults = {"data": {"text_pair_column": "text_pair"}} if cls is PairClassificationTask else {}
    return cls(OmegaConf.merge(group_defaults("task", OPTIONS[cls]), defaults, overrides))


# ---- metrics -------------------------------------------------------------------------------------------
def test_single_label_metrics_match_hand_counts():
    # gold a a b b c c, predicted a b b b a c → confusion rows (gold) a: 1 1 0, b: 0 2 0, c: 1 0 1
    metrics = M.single_label([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2], ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6) and metrics["examples"] == 6
    assert metrics["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics["confusion_matrix"]["labels"] == ["a", "b", "c"] and metrics["confusion_matrix"]["rows"] == "gold"
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                         "support": 2}
    assert metrics["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert metrics["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    # a class that is neither in gold nor predicted does not drag the macro average down
    assert M.single_label([0, 0], [0, 1], ["a", "b", "c"])["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert M.one_class_f1([0, 1, 1, 0], [1, 1, 0, 0], positive=1) == pytest.approx(0.5)


def test_single_label_metrics_agree_with_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    gold, predicted = [rng.randrange(4) for _ in range(200)], [rng.randrange(4) for _ in range(200)]
    metrics = M.single_label(gold, predicted, ["a", "b", "c", "d"])
    assert metrics["macro_f1"] == pytest.approx(sklearn.f1_score(gold, predicted, average="macro"))
    assert metrics["accuracy"] == pytest.approx(sklearn.accuracy_score(gold, predicted))
    assert metrics["confusion_matrix"]["matrix"] == sklearn.confusion_matrix(gold, predicted).tolist()


def test_correlations_and_mse_on_a_known_case():
    x, y = [1, 2, 3, 4, 5], [1, 2, 3, 4, 100]
    metrics = M.regression(x, y)
    # dx = -2..2, dy = -21 -20 -19 -18 78: Σdxdy = 200, Σdx² = 10, Σdy² = 7610
    assert metrics["pearson"] == pytest.approx(200 / math.sqrt(10 * 7610))
    assert metrics["spearman"] == pytest.approx(1.0)  # monotone
    assert metrics["mse"] == pytest.approx(95 ** 2 / 5)
    # Spearman = 1 - 6 Σd² / (n (n² - 1)) without ties: d = -1 1 -1 1 0 → 1 - 24/120
    assert M.regression([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])["spearman"] == pytest.approx(0.8)
    assert M.average_ranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert M.regression([1, 2, 3], [5, 5, 5])["pearson"] == 0.0  # constant predictions: 0, not NaN


def test_correlations_agree_with_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    gold = [rng.choice([0, 0.5, 1, 1.5, 2]) for _ in range(100)]
    predicted = [g + rng.gauss(0, 0.7) for g in gold]
    metrics = M.regression(gold, predicted)
    assert metrics["pearson"] == pytest.approx(stats.pearsonr(gold, predicted)[0])
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(gold, predicted)[0])


def test_multilabel_metrics_match_hand_counts():
    # gold {a,b} {c} {}; predicted {a} {b,c} {} → TP a, c; FP b; FN b
    metrics = M.multi_label([[0, 1], [2], []], [[0], [2, 1], []], ["a", "b", "c"])
    assert metrics["micro_precision"] == pytest.approx(2 / 3) and metrics["micro_recall"] == pytest.approx(2 / 3)
    assert metrics["micro_f1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)
    assert metrics["subset_accuracy"] == pytest.approx(1 / 3)
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


# ---- readers and label parsing ---------------------------------------------------------------------------
def test_read_table_tsv_csv_quoting_and_where(tmp_path):
    tsv = write_data(tmp_path / "a.tsv", 'sentence\tlabel\nit \'s "great" \t1\n\nbad\t0\n')
    rows = read_table(str(tsv), "task.data.train")
    assert [r["sentence"] for r in rows] == ['it \'s "great" ', "bad"]  # no quoting in TSV
    assert [r["where"] for r in rows] == [f"{tsv}:2", f"{tsv}:4"]
    csv_file = write_data(tmp_path / "b.csv", '\ufefftext,label\n"a, b",x\n"two\nlines",y\nc,z\n')
    rows = read_table(str(csv_file), "file")
    assert [r["text"] for r in rows] == ["a, b", "two\nlines", "c"]
    assert [r["where"].rsplit(":", 1)[1] for r in rows] == ["2", "3", "5"]
    bad = write_data(tmp_path / "c.tsv", "text\tlabel\nok\t1\nno label\nx\t1\t2\n")
    with pytest.raises(FtuneError) as error:
        read_table(str(bad), "file")
    assert f"{bad}:3: 1 field(s), the header has 2" in str(error.value) and f"{bad}:4: 3 field(s)" in str(error.value)


def test_classification_data_errors_name_file_and_line(tmp_path):
    task = make(ClassificationTask)
    path = write_data(tmp_path / "train.csv", "text,label\ngood film,pos\n  ,neg\nfine,\n")
    with pytest.raises(FtuneError) as error:
        task.load_file(str(path), "task.data.train")
    assert f"{path}:3: `text` is empty" in str(error.value) and f"{path}:4: `label`: not a class label" in str(error.value)
    jsonl = write_data(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n{"label": 0}\n{"text": 5, "label": [1]}\n')
    with pytest.raises(FtuneError) as error:
        task.load_file(str(jsonl), "task.data.train")
    assert f"{jsonl}:2: no field `text`" in str(error.value)
    assert f"{jsonl}:3: `text` is not a string; `label`: not a class label: [1]" in str(error.value)
    header = write_data(tmp_path / "h.tsv", "sentence\tlabel\nok\t1\n")
    with pytest.raises(FtuneError, match=r"no column `text` \(columns: sentence, label\).*task.data.text_column"):
        task.load_file(str(header), "task.data.train")
    with pytest.raises(FtuneError, match="cannot tell the format"):
        task.load_file(str(write_data(tmp_path / "x.txt", "a\n")), "task.data.train")


def test_labels_are_names_sorted_and_unseen_labels_are_reported(tmp_path):
    task = make(ClassificationTask, data={"text_column": "sentence"})
    train = task.load_file(str(write_data(tmp_path / "t.tsv", "sentence\tlabel\na\t10\nb\t2\nc\t2\n")), "task.data.train")
    dev = task.load_file(str(write_data(tmp_path / "d.tsv", "sentence\tlabel\na\t2\nb\t3\n")), "task.data.validation")
    assert train[0]["label"] == "10" and sort_labels(["10", "2", "1"]) == ["1", "2", "10"]
    with pytest.raises(FtuneError, match=r"d.tsv:3: label `3` does not occur in the training data"):
        task.fit_labels(train, {"validation": dev})
    task.fit_labels(train, {})
    assert task.labels == ["2", "10"]
    with pytest.raises(FtuneError, match="single label"):
        task.fit_labels(train[1:], {})


def test_regression_labels_must_be_finite_numbers(tmp_path):
    task = make(RegressionTask, data={"label_column": "score"})
    path = write_data(tmp_path / "r.csv", "text,score\na,1.5\nb,high\nc,nan\nd, -2 \n")
    with pytest.raises(FtuneError) as error:
        task.load_file(str(path), "task.data.train")
    assert f"{path}:3: `score`: not a number: 'high'" in str(error.value)
    assert f"{path}:4: `score`: not a finite number" in str(error.value) and "2 problem(s)" in str(error.value)


def test_multilabel_label_parsing(tmp_path):
    assert label_list('["b", "a", "b"]', ",") == ["b", "a"]
    assert label_list("sports, politics,", ",") == ["sports", "politics"]
    assert label_list("x;y", ";") == ["x", "y"] and label_list("", ",") == [] and label_list([1, "2"], ",") == ["1", "2"]
    with pytest.raises(ValueError, match="invalid JSON list"):
        label_list('["a"', ",")
    task = make(MultilabelTask, label_delimiter="|", data={"label_column": "labels"})
    csv_file = write_data(tmp_path / "m.csv", 'text,labels\na,"[""x"", ""y""]"\nb,y|z\nc,\n')
    examples = task.load_file(str(csv_file), "task.data.train")
    assert [ex["label"] for ex in examples] == [["x", "y"], ["y", "z"], []]
    jsonl = write_data(tmp_path / "m.jsonl", '{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": {"x": 1}}\n')
    with pytest.raises(FtuneError, match=r"m.jsonl:2: `labels`: not a list of labels"):
        task.load_file(str(jsonl), "task.data.train")
    task.fit_labels(examples, {})
    assert task.labels == ["x", "y", "z"]


def test_hub_datasets_map_class_ids_to_names_and_drop_unlabelled_rows(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    features = datasets.Features({"sentence": datasets.Value("string"),  # class order is not alphabetical
                                  "label": datasets.ClassLabel(names=["positive", "negative"])})
    local = tmp_path / "glue_like"  # a local folder loads like a hub dataset, offline
    for split, rows in (("train", {"sentence": ["good", "bad"], "label": [0, 1]}),
                        ("validation", {"sentence": ["fine", "unlabelled"], "label": [0, -1]})):
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(local / f"{split}.parquet"))
    task = make(ClassificationTask, data={"hub": str(local), "text_column": "sentence"})
    train = task.load_split("train")
    assert [ex["label"] for ex in train] == ["positive", "negative"]
    assert task.load_split("validation") == [{"where": f"{local}/validation:0", "text": "fine", "label": "positive"}]
    assert task.load_split("test") == []
    task.fit_labels(train, {})
    assert task.labels == ["positive", "negative"]  # the dataset's class order: id 0 stays id 0
    with pytest.raises(FtuneError, match=r"no column `text` \(columns: sentence, label\).*task.data.text_column"):
        make(ClassificationTask, data={"hub": str(local)}).load_split("train")
    # hub_splits names the dataset's own splits (MNLI: validation_matched / validation_mismatched)
    renamed = make(ClassificationTask, data={"hub": str(local), "text_column": "sentence",
                                             "hub_splits": {"test": "validation"}})
    assert [ex["text"] for ex in renamed.load_split("test")] == ["fine"]


# ---- features, batches, losses ---------------------------------------------------------------------------
def test_long_texts_are_truncated_and_counted(tokenizer, caplog):
    task = make(ClassificationTask, max_length=8)
    examples = [{"text": "the bank said on monday", "label": "a"}, {"text": "the bank " * 20, "label": "b"},
                {"text": "shares rose " * 10, "label": "a"}]
    task.fit_labels(examples, {})
    with caplog.at_level(logging.WARNING, logger="ftune"):
        features = task.featurize(examples, tokenizer)
    assert task.truncated == 2 and [f["length"] for f in features] == [7, 8, 8]
    assert "2 of 3 input(s) are longer than task.max_length=8 tokens and were truncated" in caplog.text
    assert tokenizer.convert_ids_to_tokens(features[1]["input_ids"])[-1] == "[SEP]"
    assert [f["label"] for f in features] == [0, 1, 0] and [f["example"] for f in features] == [0, 1, 2]


def test_pairs_get_segment_ids_only_where_the_model_takes_them(tokenizer):
    task = make(PairClassificationTask)
    example = {"text": "the bank", "text_pair": "shares rose", "label": "yes"}
    task.labels = ["no", "yes"]
    (feature,) = task.featurize([example], tokenizer)
    assert feature["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    batch = task.collate([feature, {**feature, "input_ids": feature["input_ids"][:3], "token_type_ids": [0, 0, 0],
                                    "length": 3}])
    assert batch["inputs"]["token_type_ids"].tolist()[1] == [0, 0, 0, 0, 0, 0, 0]
    assert batch["inputs"]["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0, 0, 0] and batch["tokens"] == 10
    assert batch["targets"]["labels"].tolist() == [1, 1]
    distilbert_like = SimpleNamespace(model_input_names=["input_ids", "attention_mask"])
    original = tokenizer.model_input_names
    try:
        tokenizer.model_input_names = distilbert_like.model_input_names
        (feature,) = task.featurize([example], tokenizer)
    finally:
        tokenizer.model_input_names = original
    assert "token_type_ids" not in feature and "token_type_ids" not in task.collate([feature])["inputs"]
    assert task.collate([{k: v for k, v in feature.items() if k != "label"}])["targets"] == {}  # predict input


def test_loss_units_are_examples():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]], requires_grad=True)
    outputs = SimpleNamespace(logits=logits)
    multilabel = make(MultilabelTask)
    multilabel.labels = ["a", "b", "c"]
    hot = multilabel.target_tensor([[0, 2], []])
    total, count = multilabel.loss(outputs, {"targets": {"labels": hot}})
    per_label = torch.nn.functional.binary_cross_entropy_with_logits(logits, hot)  # mean over all elements
    assert count.item() == 2 and total.item() == pytest.approx(per_label.item() * 2)

    classification = make(ClassificationTask, class_weights="auto")
    train = [{"text": "x", "label": label, "where": "t:1"} for label in ["a", "a", "a", "b", "c", "c"]]
    classification.fit_labels(train, {})
    assert classification.class_weights == pytest.approx([6 / 9, 6 / 3, 6 / 6])  # N / (K · count)
    labels = torch.tensor([0, 1])
    total, count = classification.loss(outputs, {"targets": {"labels": labels}})
    weighted = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([2 / 3, 2.0, 1.0]), reduction="sum")
    assert count.item() == 2 and total.item() == pytest.approx(weighted.item())
    total, _ = classification.loss(SimpleNamespace(logits=logits.detach()), {"targets": {"labels": labels}})
    assert total.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item())

    regression = make(RegressionTask)
    total, count = regression.loss(SimpleNamespace(logits=torch.tensor([[1.0], [3.0]])),
                                   {"targets": {"labels": torch.tensor([0.0, 1.0])}})
    assert total.item() == pytest.approx(1 + 4) and count.item() == 2


def test_predict_inputs_and_outputs():
    single = make(ClassificationTask)
    assert single.read_inputs(["a\tb", '{"text": "c"}', "{oops"]) == [{"text": "a\tb"}, {"text": "c"}, {"text": "{oops"}]
    pair = make(PairClassificationTask)
    assert pair.read_inputs(["a\tb", '{"text": "c", "text_pair": "d"}']) == [{"text": "a", "text_pair": "b"},
                                                                            {"text": "c", "text_pair": "d"}]
    (broken,) = pair.read_inputs(["no tab here"])  # reported on its own output line; others go on
    assert "needs two texts" in broken["error"]
    pair.labels = ["0", "1"]
    rows = pair.format_predictions([(0, [0.9, 0.1]), (1, [0.2, 0.8])], [{"example": 0}, {"example": 1}],
                                   [broken, {"text": "a", "text_pair": "b"}])
    assert rows[0] == {"error": broken["error"]} and rows[1]["label"] == "1"
    single.labels = ["neg", "pos"]
    (row,) = single.format_predictions([(1, [0.25, 0.75])], [{"example": 0}], [{"text": "fine"}])
    assert row == {"text": "fine", "label": "pos", "score": 0.75, "probabilities": {"neg": 0.25, "pos": 0.75}}
    multilabel = make(MultilabelTask, threshold=0.4)
    multilabel.labels = ["a", "b", "c"]
    (row,) = multilabel.format_predictions([[0.9, 0.1, 0.4]], [{"example": 0}], [{"text": "t"}])
    assert row["labels"] == ["a", "c"] and row["probabilities"]["b"] == 0.1
    (row,) = make(RegressionTask).format_predictions([2.5], [{"example": 0}], [{"text": "t"}])
    assert row == {"text": "t", "score": 2.5}


# ---- end to end, in-process, on the tiny model -------------------------------------------------------------
WORDS = "the bank said on monday new percent beat match people officials trading shares rose government".split()


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def write_task_data(tmp_path, task: str) -> tuple[list[str], dict[str, str]]:
    """Tiny train/validation files in a different format per task; returns (overrides, files)."""
    files = {}
    for split, n, seed in (("train", 32, 0), ("validation", 12, 1)):
        texts = sentences(n, seed)
        if task == "classification":  # TSV like SST-2, integer ids
            body = "sentence\tlabel\n" + "".join(f"{t}\t{int('bank' in t)}\n" for t in texts)
            files[split] = write_data(tmp_path / f"{split}.tsv", body)
        elif task == "pair_classification":  # CSV
            pairs = sentences(n, seed + 10)
            body = "text,text_pair,label\n" + "".join(f"{a},{b},{'yes' if i % 2 else 'no'}\n"
                                                     for i, (a, b) in enumerate(zip(texts, pairs, strict=True)))
            files[split] = write_data(tmp_path / f"{split}.csv", body)
        elif task == "regression":  # JSONL floats
            body = "".join(json.dumps({"text": t, "label": len(t.split()) / 3}) + "\n" for t in texts)
            files[split] = write_data(tmp_path / f"{split}.jsonl", body)
        else:  # multilabel: JSONL lists
            body = "".join(json.dumps({"text": t, "labels": [w for w in ("bank", "shares", "match") if w in t]}) + "\n"
                           for t in texts)
            files[split] = write_data(tmp_path / f"{split}.jsonl", body)
    overrides = [f"task={task}", f"task.data.train={files['train']}", f"task.data.validation={files['validation']}"]
    if task == "classification":
        overrides.append("task.data.text_column=sentence")
    return overrides, files


@pytest.mark.parametrize("task,main,labels", [
    ("classification", "accuracy", {"0": "0", "1": "1"}),
    ("pair_classification", "accuracy", {"0": "no", "1": "yes"}),
    ("regression", "pearson", {"0": "score"}),
    ("multilabel", "micro_f1", {"0": "bank", "1": "match", "2": "shares"}),
])
def test_train_end_to_end(compose_config, tiny_model_dir, tmp_path, task, main, labels):
    from ftune.commands import train

    overrides, _ = write_task_data(tmp_path, task)
    cfg = compose_config("train", [*overrides, f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
                                   "trainer.max_steps=4", "trainer.batch_size=8", "trainer.eval_batch_size=16",
                                   "trainer.eval_every=2", "optimizer.lr=1e-3", "logger.console=none",
                                   f"run_dir={tmp_path / 'run'}"])
    results = train.run(cfg)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["main_metric"] == main and main in saved["validation"] and results["optimized_metric"] is not None
    assert saved["validation"]["examples"] == 12 and "loss" in saved["validation"]
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["id2label"] == labels
    if task == "classification":
        matrix = saved["validation"]["confusion_matrix"]
        assert matrix["labels"] == ["0", "1"] and sum(map(sum, matrix["matrix"])) == 12
        assert set(saved["validation"]["per_class"]) == {"0", "1"} and "macro_f1" in saved["validation"]
    if task == "pair_classification":
        assert saved["validation"]["positive_label"] == "yes" and "positive_f1" in saved["validation"]
    if task == "regression":
        assert {"spearman", "mse"} <= saved["validation"].keys() and config["problem_type"] == "regression"
    if task == "multilabel":
        assert {"macro_f1", "subset_accuracy"} <= saved["validation"].keys()
        assert config["problem_type"] == "multi_label_classification"


def test_eval_predict_and_pipeline_after_training(compose_config, tiny_model_dir, tmp_path):
    from transformers import pipeline

    from ftune.commands import eval as evaluate
    from ftune.commands import predict, train

    overrides, files = write_task_data(tmp_path, "classification")
    run_dir = tmp_path / "run"
    results = train.run(compose_config("train", [*overrides, f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
                                                 "trainer.max_steps=3", "trainer.batch_size=8", "optimizer.lr=1e-3",
                                                 "logger.console=none", f"run_dir={run_dir}"]))
    metrics = evaluate.run(compose_config("eval", [f"run_dir={run_dir}", "split=validation"]))
    assert metrics["accuracy"] == pytest.approx(results["validation"]["accuracy"])
    assert json.loads((run_dir / "eval_validation.json").read_text())["confusion_matrix"]["labels"] == ["0", "1"]
    unseen = write_data(tmp_path / "unseen.tsv", "sentence\tlabel\nthe bank\t7\n")
    with pytest.raises(FtuneError, match=r"unseen.tsv:2: label `7` does not occur"):
        evaluate.run(compose_config("eval", [f"run_dir={run_dir}", f"file={unseen}"]))

    source = write_data(tmp_path / "in.txt", 'the bank said\n{"text": "shares rose"}\n\n')
    target = tmp_path / "out.jsonl"
    assert predict.run(compose_config("predict", [f"run_dir={run_dir}", f"input={source}", f"output={target}"]))["lines"] == 3
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["the bank said", "shares rose", ""]
    for row in rows:
        assert row["label"] in ("0", "1") and sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert row["score"] == max(row["probabilities"].values())

    classify = pipeline("text-classification", model=str(run_dir / "best"), device="cpu")
    assert classify("the bank said")[0]["label"] == rows[0]["label"]


def test_features_survive_the_feature_cache(tokenizer, tmp_path, monkeypatch):
    cache = pytest.importorskip("ftune.data.cache")
    monkeypatch.setenv("FTUNE_CACHE_DIR", str(tmp_path / "cache"))
    task = make(MultilabelTask, data={"text_pair_column": "text_pair"})
    examples = [{"text": "the bank", "text_pair": "rose", "label": ["x", "y"]},
                {"text": "shares", "text_pair": "the match said", "label": []}]
    task.fit_labels(examples, {})
    built = cache.featurize(task, examples, tokenizer, "train")
    task.pad_id = None  # a cache hit must bind the tokenizer again
    loaded = cache.featurize(task, examples, tokenizer, "train")
    assert loaded.to_list() == built.to_list() and task.pad_id == 0  # memory-mapped datasets, equal rows
    assert task.collate(loaded.to_list())["targets"]["labels"].tolist() == [[1.0, 1.0], [0.0, 0.0]]
