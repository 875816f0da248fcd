"""metrics.jsonl: one JSON object per start, log, eval, save, resume and end event, appended and flushed at once."""

from __future__ import annotations

import json
from pathlib import Path

WRITTEN = ("train", "eval", "start", "end", "save", "resume")


class JsonlWriter:
    def __init__(self, path: Path):
        self.path = path
        self.handle = open(path, "a", encoding="utf-8")

    def __call__(self, event: dict) -> None:
        if event["event"] == "start" and event.get("initial_step"):
            self._drop_after(event["initial_step"])
        if event["event"] in WRITTEN:
            self.handle.write(json.dumps({k: v for k, v in event.items() if not isinstance(v, dict)}) + "\n")
            self.handle.flush()

    def _drop_after(self, step: int) -> None:
        """A resumed run replays the steps after its checkpoint (exactly): the killed run's rows for those
        steps go, so the file holds each step once, as the tracker runs do."""
        self.handle.close()
        rows = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= step
                or json.loads(line)["event"] in ("start", "end")]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(self.path)
        self.handle = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self.handle.close()
