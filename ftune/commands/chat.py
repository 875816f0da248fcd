"""`ftune chat`: an interactive conversation with a tuned causal LM, one user message per stdin line.

Replies stream to stdout token by token (transformers' TextStreamer) and the conversation is kept, so the
model sees the earlier turns; the oldest turns are dropped when the prompt outgrows `task.max_length`.
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
    import torch
    from transformers import TextStreamer

    from ftune.config import defaults
    from ftune.engine.device import make_accelerator
    from ftune.tasks.generation import generate_replies

    if cfg.task is None and not cfg.run_dir:  # a plain model folder: the sft defaults are all it needs
        cfg = OmegaConf.merge(cfg, {"task": defaults("task", "sft")})
    inference = Inference.load(cfg)
    task, tokenizer, folder = inference.task, inference.tokenizer, inference.folder
    if task.name != "sft":
        raise FtuneError(f"chat needs a task=sft run, this one is task={task.name}", where="run_dir")
    task.bind_tokenizer(tokenizer)
    accelerator, _ = make_accelerator("fp32", cfg.device)  # generate() streams best without autocast
    model = inference.model.to(accelerator.device).eval()
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
        prompt = task.prompt_ids(system + history)
        while len(history) > 1 and len(prompt) + generation.max_new_tokens > task.cfg.max_length:
            history = history[2:]  # drop the oldest exchange
            prompt = task.prompt_ids(system + history)
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            reply = generate_replies(model, tokenizer, [prompt], generation, streamer=streamer)[0]
        sys.stdout.flush()
        history.append({"role": "assistant", "content": reply})
        turns += 1
    return {"turns": turns}
