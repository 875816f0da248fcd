"""The plug-in names and schemas the checks need, handed down by ftune.registry when it is imported.

config/ sits below the registry (the registry reads the schemas here), so config/ never imports it: the
registry installs itself here instead. Entry points (the CLI, `ftune.registry.register_configs`) import the
registry before any check runs."""

from __future__ import annotations

from typing import Protocol


class Catalog(Protocol):
    def names(self, table: str) -> list[str]: ...  # the registered names of a table, e.g. "TASKS"
    def kind(self, table: str) -> str: ...  # what an entry is called in messages, e.g. "peft method"
    def schema(self, table: str, name: str) -> type | None: ...  # None: not registered
    def groups(self) -> dict[str, type]: ...  # group → base schema


_installed: list[Catalog] = []


def install(catalog: Catalog) -> None:
    _installed[:] = [catalog]


def get() -> Catalog:
    if not _installed:  # a programming error, not a user's: say which call is missing
        raise RuntimeError("no plug-in registry: import ftune.registry (or call its register_configs()) before "
                           "checking a config")
    return _installed[0]
