"""`ftune predict`: JSONL predictions for text lines or JSONL, streaming from a file or stdin."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from ftune.errors import FtuneError
from ftune.inference import Inference

log = logging.getLogger("ftune")
CHUNK = 512  # lines per model pass: output streams, memory stays flat on long inputs


def run(cfg: DictConfig) -> dict:
    inference = Inference.load(cfg)
    count = 0
    try:
        with _open_in(cfg.input) as source, _open_out(cfg.output) as sink:
            for lines in _chunks(source):
                for row in inference.predict_lines(lines, first_line=count + 1):
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                count += len(lines)
    except BrokenPipeError:
        # `ftune predict ... | head`: the reader is gone; stop quietly, like other Unix tools
        sys.stderr.close()
        return {"lines": count}
    log.info("predicted %d line(s)", count)
    return {"lines": count}


def _chunks(source):
    lines = []
    for line in source:
        lines.append(line.rstrip("\r\n"))
        if len(lines) == CHUNK:
            yield lines
            lines = []
    if lines:
        yield lines


@contextmanager
def _open_in(path: str):
    if path == "-":
        yield open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False)
        return
    if not Path(path).is_file():
        raise FtuneError(f"input file not found: {path}", where="input", fix="give a text or JSONL file, or - for stdin")
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield handle


@contextmanager
def _open_out(path: str):
    if path == "-":
        yield sys.stdout
        return
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        yield handle
    tmp.replace(path)
