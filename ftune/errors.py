"""User-facing errors: one line on stderr, exit code 2, traceback only in debug mode.

Exit codes (documented in docs/cli.md):
    0   success
    1   a metric gate failed (`ftune eval ... check='f1>=0.85'`); also Python's code for an unexpected
        internal error, which prints a traceback (a bug: please report it with FTUNE_DEBUG=1 output)
    2   bad configuration, missing file or invalid data
    130 interrupted (SIGINT, Ctrl-C): a checkpoint was saved, resume with resume=true
    143 terminated (SIGTERM, e.g. a pre-empted job): a checkpoint was saved, resume with resume=true
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class FtuneError(Exception):
    """A problem the user can fix: says what is wrong, where, and how to fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text} ({self.fix})" if self.fix else text


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        self.exit_code = 128 + signum
        super().__init__(message)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' did you mean `x`?' for the closest choice, or '' when nothing is close."""
    choices = list(choices)
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    match = match or sorted(c for c in choices if c.startswith(word) or word.startswith(c))[:1]
    return f"did you mean `{match[0]}`?" if match and word else ""


def debug_enabled() -> bool:
    return os.environ.get("FTUNE_DEBUG", "") not in ("", "0", "false", "False")


def report(error: FtuneError) -> int:
    """Print the error as one line (traceback too in debug mode) and return the exit code."""
    if debug_enabled():
        import traceback

        traceback.print_exception(error)
    print(f"ftune: error: {error.one_line()}", file=sys.stderr, flush=True)
    return EXIT_USAGE


EXIT_CHECK_FAILED = 1


class CheckFailed(Exception):
    """A metric gate (`ftune eval ... check='f1>=0.85'`) was missed: one line, exit code 1."""
