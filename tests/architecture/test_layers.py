"""ftune's import graph, read with `ast` (no module is imported), and the sizes of its files.

Layers, top to bottom; a module imports only downwards or within its layer, and no import makes a cycle:

    cli → commands → serve → run/inference/report/card/sweep/recipes/export/push → engine/tasks
        → data/models/peft/loggers/optim/freeze/distributed → registry → config → errors/paths/run_dir

Every import counts, lazy ones inside functions included: a lazy import is a cycle postponed, not avoided.
Imports under `if TYPE_CHECKING:` are left out (they never run). Importing `ftune.a.b` from outside the
package `ftune.a` also counts as importing `ftune.a`, because Python runs `ftune/a/__init__.py` first.

Sizes: no .py file in ftune/ over 300 lines, cli.py at most 150.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ftune"

LAYERS = ["cli", "commands", "serve", "run", "engine", "components", "registry", "config", "base"]

# module → layer. "x.*" covers x and everything below it; a module matched by no entry fails the test.
MODULE_LAYERS = {
    "ftune.cli": "cli",
    "ftune.__main__": "cli",
    "ftune.commands.*": "commands",
    "ftune.serve.*": "serve",  # the HTTP package issue-serve creates from serving.py and openai_api.py
    "ftune.run": "run",
    "ftune.inference": "run",
    "ftune.loading": "run",  # the run settings and model folder an Inference loads
    "ftune.replies": "run",  # prompt ids and generation settings of Inference.generate
    "ftune.generate_batch": "run",  # Inference.generate_batch: several replies decoded together (serve)
    "ftune.batch_cache": "run",  # the rows of a batch of replies with their KV cache (generate_batch)
    "ftune.report.*": "run",  # may become a package when it is split
    "ftune.card": "run",
    "ftune.sweep": "run",
    "ftune.recipes": "run",
    "ftune.export.*": "run",
    "ftune.push": "run",
    "ftune.resume": "run",  # compares a run's saved config with the new one
    "ftune.provenance": "run",  # the versions a run was trained with, in its results
    "ftune.checks": "run",  # metric gates over a run's results (eval check=...)
    "ftune.prompted.*": "run",  # prompted evaluation of a causal LM (eval prompt=...), beside inference
    "ftune.continual.stage": "run",  # what train does with the continual group: adapters, forgetting table
    "ftune.init_from": "run",  # init_from=<run | folder>: an earlier run's weights into a new task's model
    "ftune.explain.*": "run",  # attributions (captum), faithfulness, perturbations: explain and stress (issue 31)
    "ftune.engine.*": "engine",
    "ftune.tasks.*": "engine",
    "ftune.data.*": "components",
    "ftune.demo_data.*": "components",
    "ftune.models": "components",
    "ftune.sentence_classifier": "components",  # the SetFit architecture as a transformers model
    "ftune.peft": "components",
    "ftune.peft_methods": "components",  # one class per PEFT method: its peft config and hooks
    "ftune.loggers.*": "components",
    "ftune.optim": "components",
    "ftune.freeze": "components",
    "ftune.distributed": "components",
    "ftune.continual.*": "components",  # label-set extension, replay, L2-SP/EWC terms (stage.py: run layer)
    "ftune.registry": "registry",
    "ftune.config.*": "config",
    "ftune": "base",  # ftune/__init__.py: __version__
    "ftune.errors": "base",
    "ftune.paths": "base",
    "ftune.run_dir": "base",
    "ftune.notices": "base",  # library notices silenced at `import ftune` (logging only)
}

# The violations other branches of issue 25 remove, so that this test is green before they merge.
# (test_known_violations_are_still_there fails for an entry that no longer applies: none outlives its fix.)
# fixed on branch issue-serve / issue-plugins; remove at merge
KNOWN_CYCLES: list[set[str]] = []
# fixed on branch issue-plugins; remove at merge
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_LONG: set[str] = set()
MAX_LINES = 300
MAX_CLI_LINES = 150


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(module: str, path: Path) -> set[str]:
    """Dotted names of everything `module` imports (anywhere in the file), relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the `if TYPE_CHECKING:` body never runs
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b`: b is a submodule (ftune.a.b) or a name defined in a; import_graph tells which
            names.update(f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


@cache
def import_graph() -> dict[str, set[str]]:
    """module → the ftune modules it imports (package __init__ modules included, see the docstring)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for name in _imported_names(module, path):
            while name and name not in modules:  # ftune.x.func → ftune.x
                name = name.rpartition(".")[0]
            if not name:
                continue  # not ftune
            targets.add(name)
            parent = name.rpartition(".")[0]
            while parent not in ("", "ftune"):  # ftune/__init__.py runs first for every module alike
                if not (module == parent or module.startswith(parent + ".")):
                    targets.add(parent)
                parent = parent.rpartition(".")[0]
        graph[module] = {t for t in targets if t != module}
    return graph


def layer_of(module: str) -> str | None:
    best = None
    for key, layer in MODULE_LAYERS.items():
        stem = key.removesuffix(".*")
        if module == stem or (key.endswith(".*") and module.startswith(stem + ".")):
            if best is None or len(stem) > len(best[0]):
                best = (stem, layer)
    return best[1] if best else None


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module: each one holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One concrete cycle through the component's first module (shortest, breadth-first), for the message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return sorted(component)


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return {(module, target) for module, targets in graph.items() for target in targets
            if rank[layer_of(target)] < rank[layer_of(module)]}


def _line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_every_module_has_a_layer():
    assert set(MODULE_LAYERS.values()) <= set(LAYERS)
    unknown = [m for m in _modules() if layer_of(m) is None]
    assert not unknown, "; ".join(f"add {m} to a layer (MODULE_LAYERS in {Path(__file__).name})" for m in unknown)


def test_no_import_cycles():
    graph = import_graph()
    new = [c for c in strongly_connected(graph) if c not in KNOWN_CYCLES]
    assert not new, "import cycle(s): " + "; ".join(" -> ".join(a_cycle(graph, c)) for c in new)


def test_no_import_from_a_lower_layer_up():
    test_every_module_has_a_layer()
    new = sorted(upward_imports(import_graph()) - KNOWN_UPWARD)
    assert not new, "imports from a lower layer up: " + "; ".join(
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})" for m, t in new)


def test_no_file_over_300_lines():
    long = {str(p.relative_to(PACKAGE)): _line_count(p) for p in PACKAGE.rglob("*.py") if _line_count(p) > MAX_LINES}
    new = {name: n for name, n in long.items() if name not in KNOWN_LONG}
    assert not new, f"over {MAX_LINES} lines: " + ", ".join(f"ftune/{name} ({n})" for name, n in sorted(new.items()))


def test_cli_stays_thin():
    assert _line_count(PACKAGE / "cli.py") <= MAX_CLI_LINES, "ftune/cli.py: move logic to config/ or sweep.py"


def test_known_violations_are_still_there():
    """An allow-list entry whose violation is gone must go too, or it would hide the next one."""
    graph = import_graph()
    cycles = strongly_connected(graph)
    gone = [f"cycle {sorted(c)}" for c in KNOWN_CYCLES if c not in cycles]
    gone += [f"{m} -> {t}" for m, t in sorted(KNOWN_UPWARD - upward_imports(graph))]
    gone += [f"ftune/{name}" for name in sorted(KNOWN_LONG)
             if not (PACKAGE / name).is_file() or _line_count(PACKAGE / name) <= MAX_LINES]
    assert not gone, "fixed, remove from the KNOWN lists in tests/architecture/test_layers.py: " + "; ".join(gone)


def test_the_graph_sees_lazy_imports_and_skips_type_checking(tmp_path):
    """The reader itself: a lazy import inside a function counts, one under TYPE_CHECKING does not."""
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ftune import run\n"
                      "def f():\n    from ftune.data import cache\n    from . import sibling\n")
    names = _imported_names("ftune.pkg.probe", source)
    assert "ftune.data.cache" in names and "ftune.pkg.sibling" in names
    assert "ftune.run" not in names
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert a_cycle(graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]
