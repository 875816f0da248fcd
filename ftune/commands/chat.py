"""`ftune chat`: an interactive conversation with a tuned causal LM, one user message per stdin line.

Replies stream to stdout piece by piece (`Inference.stream`) and the conversation is kept, so the model sees
the earlier turns; the oldest turns are dropped when the prompt outgrows `task.max_length`.
Works the same through a pipe (`printf 'hi\\n' | ftune chat run_dir=...`); EOF ends the session.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from ftune.errors import FtuneError
from ftune.inference import Inference

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    from ftune.registry import defaults

    if cfg.task is None and not cfg.run_dir:  # a plain model folder: chat.yaml's model_task defaults suffice
        cfg = OmegaConf.merge(cfg, {"task": defaults("task", cfg.model_task)})
    inference = Inference.load(cfg)
    task, folder = inference.task, inference.folder
    if task.chat_input != "messages":  # a chat template over the turns: a tuned causal LM (sft, dpo)
        raise FtuneError(f"chat needs a chat model's run (a task with a chat template, e.g. sft), this one is "
                         f"task={task.name}", where="run_dir")
    inference.precision = "fp32"  # before the engine is built: generate() streams best without autocast
    generation = OmegaConf.merge(task.cfg.generation, {"max_new_tokens": cfg.max_new_tokens}
                                 if cfg.max_new_tokens else {})
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    history: list[dict] = []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {folder} (/reset clears the conversation, Ctrl-D ends it)", file=sys.stderr)
    turns = 0
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:  # EOF
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": text})
        prompt = inference.prompt(system + history)
        while len(history) > 1 and len(prompt) + generation.max_new_tokens > inference.max_prompt_tokens:
            history = history[2:]  # drop the oldest exchange
            prompt = inference.prompt(system + history)
        reply = inference.stream(prompt, generation)
        for piece in reply:
            print(piece, end="", flush=True)
        print(flush=True)
        history.append({"role": "assistant", "content": reply.result["text"]})
        turns += 1
    return {"turns": turns}
