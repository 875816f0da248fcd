import pytest

from ftune.data.readers import read_conll, read_tagged_jsonl
from ftune.errors import FtuneError
from tests.conftest import write_data


def test_conll_docstart_blank_lines_and_columns(tmp_path):
    path = write_data(tmp_path / "a.conll", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                                      "Peter NNP B-NP B-PER\n-DOCSTART- -X- O O\nBlackburn NNP B-NP B-PER\n")
    sentences = read_conll(str(path), "task.data.train")
    assert [s["tokens"] for s in sentences] == [["EU", "rejects"], ["Peter"], ["Blackburn"]]
    assert [s["tags"] for s in sentences] == [["B-ORG", "O"], ["B-PER"], ["B-PER"]]
    assert sentences[0]["where"].endswith("a.conll:3")
    assert sentences[2]["where"].endswith("a.conll:9")


def test_conll_configurable_columns_tabs_and_crlf(tmp_path):
    path = write_data(tmp_path / "b.tsv", "B-LOC\tParis\r\nO\tis\r\n\r\n")
    sentences = read_conll(str(path), "file", token_column=1, tag_column=0)
    assert sentences == [{"tokens": ["Paris", "is"], "tags": ["B-LOC", "O"], "where": f"{path}:1"}]


def test_conll_missing_tag_column_names_every_line(tmp_path):
    path = write_data(tmp_path / "c.conll", "Paris B-LOC\nlonely\n\nok O\nalone\n")
    with pytest.raises(FtuneError) as error:
        read_conll(str(path), "task.data.train")
    message = error.value.one_line()
    assert "2 problem(s)" in message and f"{path}:2" in message and f"{path}:5" in message


def test_conll_rejects_bytes_that_are_not_utf8(tmp_path):
    path = write_data(tmp_path / "d.conll", b"Paris B-LOC\nM\xfcnchen B-LOC\n")
    with pytest.raises(FtuneError, match=r"d.conll:2: bytes that are not UTF-8"):
        read_conll(str(path), "task.data.train")


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(FtuneError) as error:
        read_conll(str(tmp_path / "nope.conll"), "task.data.validation")
    assert error.value.where == "task.data.validation"


def test_tagged_jsonl_and_its_errors(tmp_path):
    good = write_data(tmp_path / "g.jsonl", '{"tokens": ["Rome"], "tags": ["B-LOC"]}\n\n{"tokens": [], "tags": []}\n')
    assert read_tagged_jsonl(str(good), "file") == [{"tokens": ["Rome"], "tags": ["B-LOC"], "where": f"{good}:1"}]
    bad = write_data(tmp_path / "b.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n{not json}\n[1]\n')
    with pytest.raises(FtuneError) as error:
        read_tagged_jsonl(str(bad), "file")
    assert f"{bad}:2: invalid JSON" in error.value.one_line()
    assert f"{bad}:3: expected a JSON object" in error.value.one_line()
