"""What the causal-LM tasks (sft, dpo) share: data formats, chat rendering and the loss mask.

Formats (`task.data.format`, `auto` detects per row): OpenAI `messages`, Alpaca (`instruction`, optional
`input`, `output`), ShareGPT (`conversations` of {from, value}, roles mapped by `task.data.role_map`),
`prompt_response` and plain `text` (continued pre-training: every token trains). Every chat row becomes a
list of {role, content} messages.

The loss mask is the characters each assistant turn adds to the rendering (its content and the template's
end-of-turn marker, so the model learns to stop), found by rendering the conversation prefix by prefix with
the tokenizer's chat template. A template that does not render a conversation as the concatenation of its
turns (e.g. one that drops the reasoning of earlier turns) is refused, or trained on its last assistant turn
only with `task.train_on=last_turn` (then only the last turn has to render incrementally).
"""

from __future__ import annotations

import logging
from typing import Any

from ftune.errors import FtuneError

log = logging.getLogger("ftune")
ROLES = ("system", "user", "assistant", "tool")
FORMATS = ("auto", "messages", "alpaca", "sharegpt", "prompt_response", "text")
# ShareGPT speaker names seen in the wild (FastChat, LLaMA-Factory, Axolotl); task.data.role_map adds or overrides
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool"}
# Used when the tokenizer has no chat template and task.chat_template is unset: ChatML-like tags, and the
# EOS token after each assistant turn so that generation stops there.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


# ---- rows → messages ------------------------------------------------------------------------------------
def detect(row: dict, data: Any) -> str:
    """The format of one row, from its keys; ValueError when it fits none."""
    for fmt, key in (("messages", data.messages_field), ("sharegpt", data.conversations_field),
                     ("alpaca", "instruction"), ("prompt_response", data.prompt_field), ("text", data.text_field)):
        if key in row:
            return fmt
    raise ValueError(f"fits no format: no `{data.messages_field}`, `{data.conversations_field}`, `instruction`, "
                     f"`{data.prompt_field}` or `{data.text_field}` field")


def read_row(row: dict, data: Any, need_reply: bool, fmt: str | None = None) -> dict:
    """{"messages": [...]} or, for the text format, {"text": ...}; ValueError says what is wrong with the row."""
    fmt = fmt or (data.format if data.format != "auto" else detect(row, data))
    if fmt == "text":
        text = row.get(data.text_field)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"`{data.text_field}` must be a non-empty string (format text)")
        return {"text": text}
    readers = {"messages": _messages, "sharegpt": _sharegpt, "alpaca": _alpaca, "prompt_response": _prompt_response}
    if fmt not in readers:
        raise FtuneError(f"unknown format `{fmt}`", where="task.data.format", fix=f"choose from: {', '.join(FORMATS)}")
    messages = readers[fmt](row, data, need_reply)
    if need_reply and not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant message to learn from")
    if not messages or messages[0]["role"] == "assistant":
        raise ValueError("the conversation starts with the assistant: it needs a prompt first")
    return {"messages": messages}


def _messages(row: dict, data: Any, need_reply: bool) -> list[dict]:
    messages = row.get(data.messages_field)
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"`{data.messages_field}` must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} needs a role ({', '.join(ROLES)}) and a string content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _sharegpt(row: dict, data: Any, need_reply: bool) -> list[dict]:
    turns = row.get(data.conversations_field)
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"`{data.conversations_field}` must be a non-empty list")
    roles = {**SHAREGPT_ROLES, **dict(data.role_map or {})}
    messages = []
    if isinstance(row.get("system"), str) and row["system"]:
        messages.append({"role": "system", "content": row["system"]})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {i} needs `from` and a string `value`")
        speaker = turn.get("from")
        if roles.get(speaker) not in ROLES:
            raise ValueError(f"turn {i}: unknown speaker `{speaker}` (map it: task.data.role_map.{speaker}=assistant "
                             f"or user, system, tool)")
        messages.append({"role": roles[speaker], "content": turn["value"]})
    return messages


def _alpaca(row: dict, data: Any, need_reply: bool) -> list[dict]:
    instruction, extra = row.get("instruction"), row.get("input") or ""
    if not isinstance(instruction, str) or not isinstance(extra, str):
        raise ValueError("`instruction` (and `input`, when given) must be strings (format alpaca)")
    # LLaMA-Factory's rendering of an Alpaca row: instruction and input joined by a newline
    messages = _with_system(row.get("system") or data.system_prompt, instruction + ("\n" + extra if extra else ""))
    return _reply(messages, row, "output", need_reply)


def _prompt_response(row: dict, data: Any, need_reply: bool) -> list[dict]:
    if not isinstance(row.get(data.prompt_field), str):
        raise ValueError(f"`{data.prompt_field}` must be a string")
    return _reply(_with_system(data.system_prompt, row[data.prompt_field]), row, data.response_field, need_reply)


def _with_system(system: str | None, user: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def _reply(messages: list[dict], row: dict, field: str, need_reply: bool) -> list[dict]:
    if need_reply or field in row:
        if not isinstance(row.get(field), str):
            raise ValueError(f"`{field}` must be a string")
        messages.append({"role": "assistant", "content": row[field]})
    return messages


# ---- rendering and the loss mask ---------------------------------------------------------------------------
def bind_template(tokenizer: Any, chat_template: str | None) -> None:
    """Chat template and pad token; both are saved with the tokenizer into best/ (predict, chat)."""
    if chat_template:
        tokenizer.chat_template = chat_template
    elif not tokenizer.chat_template:
        log.info("the tokenizer has no chat template: using ftune's default (set task.chat_template to choose)")
        tokenizer.chat_template = DEFAULT_TEMPLATE
    if tokenizer.pad_token_id is None:  # causal LMs rarely have one; padding is masked anyway
        if tokenizer.eos_token is None:
            raise FtuneError("the tokenizer has neither a pad nor an EOS token", where="model.name_or_path")
        tokenizer.pad_token = tokenizer.eos_token


def render(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict], last_turn: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans that its assistant turns (or only the last) add."""
    text, spans = render(tokenizer, messages), []
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i in turns[-1:] if last_turn else turns:
        before, after = render(tokenizer, messages[:i], generation_prompt=True), render(tokenizer, messages[:i + 1])
        if not (after.startswith(before) and text.startswith(after)):
            fix = ("set task.train_on=last_turn (templates that drop earlier turns' reasoning), or a task.chat_template "
                   "that renders each message in order") if not last_turn else \
                "set task.chat_template to a template that renders each message in order"
            raise FtuneError("the chat template does not render a conversation turn by turn, so the assistant "
                             f"tokens cannot be told apart{' (even the last turn)' if last_turn else ''}",
                             where="task.chat_template", fix=fix)
        spans.append((len(before), len(after)))
    return text, spans


def encode_chat(tokenizer: Any, messages: list[dict], max_length: int, last_turn: bool = False) -> dict:
    """input_ids and labels (-100 outside the trained spans), cut at max_length; `ends` says whether every
    trained span that survived the cut contains an end-of-turn (special) token."""
    text, spans = assistant_spans(tokenizer, messages, last_turn)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    span_of = [next((k for k, (s, e) in enumerate(spans) if s <= start < e), None) for start, _ in offsets]
    labels = [t if k is not None else -100 for t, k in zip(ids, span_of, strict=True)]
    cut = len(ids) > max_length
    kept_chars = offsets[max_length - 1][1] if cut else len(text)
    ids, labels, span_of = ids[:max_length], labels[:max_length], span_of[:max_length]
    enders = end_of_turn_ids(tokenizer)
    complete = [k for k, (_, end) in enumerate(spans) if end <= kept_chars]  # spans the cut left whole
    ends = all(any(t in enders for t, j in zip(ids, span_of, strict=True) if j == k) for k in complete)
    return {"input_ids": ids, "labels": labels, "cut": cut, "ends": ends}


def encode_text(tokenizer: Any, text: str, max_length: int) -> list[dict]:
    """A plain-text document for continued pre-training: every token trains, EOS appended (documents stay
    apart when packed), long documents split into windows of max_length tokens."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return [{"input_ids": ids[i:i + max_length], "labels": ids[i:i + max_length], "cut": False, "ends": True}
            for i in range(0, len(ids), max_length)]


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Tokens that can close an assistant turn: EOS and the tokenizer's special tokens (<|im_end|>, <|eot_id|>)."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special}
    return ids - ({tokenizer.pad_token_id} if tokenizer.pad_token_id != tokenizer.eos_token_id else set())


def check_trained(encoded: list[dict], split_size: int, tokenizer: Any) -> None:
    """Refuse data that would train nothing or never learn to stop; warn about partly lost examples."""
    trained = [e for e in encoded if any(label != -100 for label in e["labels"])]
    if encoded and not trained:
        raise FtuneError(f"none of the {split_size} examples has a trained token within task.max_length (every "
                         "assistant turn is masked or cut away)", where="task.data",
                         fix="check that the data has assistant replies, or raise task.max_length")
    if len(trained) < len(encoded):
        log.warning("%d of %d sequence(s) have no trained token left within task.max_length",
                    len(encoded) - len(trained), len(encoded))
    unended = sum(not e["ends"] for e in trained)
    if unended:
        raise FtuneError(f"{unended} conversation(s) have an assistant turn whose trained tokens hold no end-of-turn "
                         f"token (EOS `{tokenizer.eos_token}`): the model would never learn to stop",
                         where="task.chat_template",
                         fix="use a chat template that closes each assistant turn, e.g. with {{ eos_token }}")


def prompt_ids(tokenizer: Any, messages: list[dict], max_length: int) -> list[int]:
    """Token ids of the conversation up to its last non-assistant turn, ending with the assistant header."""
    last = max(i for i, m in enumerate(messages) if m["role"] != "assistant")
    text = render(tokenizer, messages[:last + 1], generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:]  # keep the most recent context
