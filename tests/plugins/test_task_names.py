"""Outside the registry and the tasks' own modules, no code in ftune/ names a task: card, export, serve and the
engine ask the task for its facts (ftune/tasks/base.py), so adding a task never edits them."""

from __future__ import annotations

import ast
from pathlib import Path

import ftune
from ftune import registry

PACKAGE = Path(ftune.__file__).parent
ALLOWED = {"registry.py"}  # the plug-in tables; ftune/tasks/ (the tasks themselves) is skipped as a folder


def quoted_task_names(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each string constant equal to a task name (a docstring or message naming one in a
    sentence is not equal to it, so passes)."""
    return sorted((node.lineno, node.value) for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names)


def test_no_file_outside_the_registry_and_the_tasks_names_a_task():
    names = set(registry.TASKS)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("tasks/") or relative in ALLOWED:
            continue
        found += [f"ftune/{relative}:{line}: {name!r}" for line, name in quoted_task_names(path.read_text(), names)]
    assert not found, "task names outside the registry and ftune/tasks/ (ask the task's facts instead):\n" + \
        "\n".join(found)


def test_the_scan_catches_a_name_check():
    source = 'x = "question answering"\nif task.name == "qa":\n    pass\n'
    assert quoted_task_names(source, set(registry.TASKS)) == [(2, "qa")]
