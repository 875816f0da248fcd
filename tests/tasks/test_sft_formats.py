"""sft data formats (messages, Alpaca, ShareGPT, prompt/response, plain text): rendering and loss masks against
hand-written expectations, refusals (no format, nothing trained, no end of turn), last-turn mode, `data show`."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks.sft import SftTask
from tests.conftest import run_cli, write_data

END = "<|im_end|>\n"  # the tiny Llama's ChatML template closes every turn with it (EOS + newline)
ROWS = {  # one row per format → (messages it becomes, what trains)
    "messages": ({"messages": [{"role": "user", "content": "what colour is the sky ?"},
                               {"role": "assistant", "content": "blue"}]},
                 [{"role": "user", "content": "what colour is the sky ?"}, {"role": "assistant", "content": "blue"}],
                 ["blue"]),
    "alpaca": ({"instruction": "summarize the long story", "input": "the cat sat on the mat", "output": "a cat sat"},
               [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "summarize the long story\nthe cat sat on the mat"},
                {"role": "assistant", "content": "a cat sat"}], ["a cat sat"]),
    "sharegpt": ({"system": "be kind", "conversations": [
        {"from": "human", "value": "hello , how are you ?"}, {"from": "gpt", "value": "fine"},
        {"from": "observation", "value": "the sky is blue"}, {"from": "gpt", "value": "thank you"}]},
                 [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello , how are you ?"},
                  {"role": "assistant", "content": "fine"}, {"role": "tool", "content": "the sky is blue"},
                  {"role": "assistant", "content": "thank you"}], ["fine", "thank you"]),
    "prompt_response": ({"prompt": "translate this sentence please", "response": "das ist ein kleines haus"},
                        [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "translate this sentence please"},
                         {"role": "assistant", "content": "das ist ein kleines haus"}], ["das ist ein kleines haus"]),
}


def sft_task(**settings) -> SftTask:
    return SftTask(OmegaConf.merge(defaults("task", "sft"), settings))


def trained_text(chat_tokenizer, feature: dict) -> str:
    return chat_tokenizer.decode([t for t in feature["labels"] if t != -100])


@pytest.mark.parametrize("declared", ["auto", "explicit"])
def test_every_format_renders_and_masks_as_written(declared, chat_tokenizer, tmp_path):
    for fmt, (row, messages, replies) in ROWS.items():
        task = sft_task(data={"format": "auto" if declared == "auto" else fmt, "system_prompt": "be brief"})
        [example] = task.load_file(str(write_data(tmp_path / f"{fmt}.jsonl", [row])))
        assert example["messages"] == messages, fmt
        [feature] = task.featurize([example], chat_tokenizer)
        assert trained_text(chat_tokenizer, feature) == "".join(r + END for r in replies), fmt
        rendered = chat_tokenizer.decode(feature["input_ids"])
        assert rendered == "".join(f"<|im_start|>{m['role']}\n{m['content']}{END}" for m in messages), fmt


def test_sharegpt_with_custom_role_names(chat_tokenizer, tmp_path):
    path = write_data(tmp_path / "custom.jsonl", [{"conversations": [
        {"from": "person", "value": "hello"}, {"from": "bot", "value": "hi there"}]}])
    with pytest.raises(FtuneError, match=r"custom.jsonl:1: turn 0: unknown speaker `person`.*task.data.role_map.person"):
        sft_task().load_file(str(path))
    task = sft_task(data={"format": "sharegpt", "role_map": {"person": "user", "bot": "assistant"}})
    [example] = task.load_file(str(path))
    assert example["messages"] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    assert trained_text(chat_tokenizer, task.featurize([example], chat_tokenizer)[0]) == "hi there" + END


def test_rows_that_fit_no_format_name_their_line(tmp_path):
    path = write_data(tmp_path / "mixed.jsonl", [ROWS["messages"][0], {"question": "q", "answer": "a"},
                                            {"instruction": 3, "output": "x"}])
    with pytest.raises(FtuneError, match=r"2 problem\(s\).*mixed.jsonl:2: fits no format.*mixed.jsonl:3: `instruction`"):
        sft_task().load_file(str(path))
    with pytest.raises(FtuneError, match=r"mixed.jsonl:1: .*`instruction`"):  # format=alpaca: a messages row is wrong
        sft_task(data={"format": "alpaca"}).load_file(str(path))
    with pytest.raises(FtuneError, match="task.data.format"):
        sft_task(data={"format": "csv"})


def test_all_masked_dataset_is_refused(chat_tokenizer):
    long_prompt = [{"role": "user", "content": "the cat sat on the mat " * 20}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(FtuneError, match="none of the 2 examples has a trained token"):
        sft_task(max_length=16).featurize([{"messages": long_prompt}] * 2, chat_tokenizer)


def test_template_without_end_of_turn_is_refused(chat_tokenizer):
    no_end = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    with pytest.raises(FtuneError, match="end-of-turn token.*never learn to stop"):
        sft_task(chat_template=no_end).featurize([{"messages": ROWS["messages"][1]}], chat_tokenizer)


def test_last_turn_mode_for_templates_that_drop_earlier_reasoning(chat_tokenizer):
    # like Qwen3's template: earlier assistant turns lose their <think> block, the last one keeps it
    drops = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
             "{{ '<|im_start|>assistant\\n' + m['content'].split('</think>')[-1] + '<|im_end|>\\n' }}"
             "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}"
             "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    chat = [{"role": "user", "content": "sky ?"}, {"role": "assistant", "content": "<think>look up</think>blue"},
            {"role": "user", "content": "grass ?"}, {"role": "assistant", "content": "<think>look down</think>green"}]
    with pytest.raises(FtuneError, match="turn by turn.*task.train_on=last_turn"):
        sft_task(chat_template=drops).featurize([{"messages": chat}], chat_tokenizer)
    [feature] = sft_task(chat_template=drops, train_on="last_turn").featurize([{"messages": chat}], chat_tokenizer)
    assert trained_text(chat_tokenizer, feature) == "<think>look down</think>green" + END
    assert "look up" not in chat_tokenizer.decode(feature["input_ids"])  # the earlier turn as the template renders it


def test_plain_text_trains_every_token_and_packs_without_crossing_documents(chat_tokenizer, tiny_llama_dir, tmp_path):
    path = write_data(tmp_path / "corpus.jsonl", [{"text": "the cat sat on the mat"}, {"text": "a dog ran in the park"},
                                             {"text": "Paris is the capital of France . " * 6}])
    task = sft_task(packing=True, max_length=24)
    examples = task.load_file(str(path))
    features = task.featurize(examples, chat_tokenizer)
    assert [f["example"] for f in features].count(2) >= 2  # the long document is split into windows
    for feature in features:
        assert feature["labels"] == feature["input_ids"]  # every token trains
    assert features[0]["input_ids"][-1] == chat_tokenizer.eos_token_id  # documents end with EOS
    model = task.build_model(str(tiny_llama_dir)).eval()
    packed = task.collate(features[:2])
    assert packed["inputs"]["input_ids"].shape[0] == 1  # both documents in one row
    labels = packed["targets"]["labels"][0].tolist()
    start = features[0]["length"]
    assert labels[0] == -100 and labels[start] == -100  # no document's first token is predicted from another
    with torch.no_grad():
        logits = model(**packed["inputs"]).logits[0]
        for feature, (_, begin, end) in zip(features[:2], packed["segments"], strict=True):
            alone = model(input_ids=torch.tensor([feature["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[begin:end], alone, atol=1e-4, rtol=1e-4)


def test_data_show_highlights_what_trains(tiny_llama_dir, tmp_path, capsys):
    path = write_data(tmp_path / "chat.jsonl", [ROWS["sharegpt"][0], ROWS["alpaca"][0]])
    run_cli("data", "show", "task=sft", "model=smollm2-135m", f"model.name_or_path={tiny_llama_dir}",
            f"task.data.train={path}", "n=1")
    out = capsys.readouterr().out
    assert "⟦fine<|im_end|>\n⟧" in out and "⟦thank you<|im_end|>\n⟧" in out  # not a terminal: bracketed
    assert "example 1 (" in out and "example 2 (" not in out  # n=1
    assert "2 feature(s) from 2 example(s)" in out and "trained tokens" in out
