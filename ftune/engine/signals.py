"""SIGINT/SIGTERM during training: finish the step, save a checkpoint, stop; every rank at the same step."""

from __future__ import annotations

import logging
import signal
import threading

import torch

log = logging.getLogger("ftune")


class StopOnSignal:
    """SIGINT/SIGTERM ask the loop to finish its step, save a checkpoint and stop; a second signal
    stops at once. Handlers are only installed in the main thread and restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self.previous = 0, {}
        self.shared: int | None = None  # with several ranks: the signal all of them act on, from the last step

    @property
    def agreed(self) -> int:
        """The signal to act on now: this process's own when it runs alone."""
        return self.signum if self.shared is None else self.shared

    def flags(self, device) -> torch.Tensor:
        """[SIGINT here, SIGTERM here], summed over the ranks with the step's other numbers."""
        return torch.tensor([self.signum == signal.SIGINT, self.signum == signal.SIGTERM], device=device).float()

    def agree(self, finite: torch.Tensor, flags: torch.Tensor, check: bool, processes: int) -> bool:
        """Whether the step was finite (True when not checked), and the agreed signal, from the summed flags.
        A signal that arrives after the step's collective is acted on one step later, by every rank."""
        if processes == 1:  # nothing to agree on: no host sync unless checking
            return bool(finite) if check else True
        ok, sigint, sigterm = torch.cat([finite.reshape(1).float(), flags]).tolist()
        self.shared = signal.SIGTERM if sigterm else (signal.SIGINT if sigint else 0)
        return bool(ok)

    def _handle(self, signum, frame):
        if self.signum:  # second signal: the user insists
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("signal %d: finishing the current step, then saving a checkpoint (again to stop now)", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
