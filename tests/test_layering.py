"""The package's import graph, read from the source with ``ast``: no circles, nothing imported upward.

Folders are layers; a module may import its own layer and the layers below it, never one above,
at module level, inside a function (a call-time import is still a dependency) or under
``if TYPE_CHECKING:`` (a type named in an annotation is a dependency of the reader too).
The layer order is written once, here; README.md's Layout section shows the same list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: bottom to top; "(package)" is mlxrnn/__init__.py, which gathers the public names of every layer;
#: "_moved" is the table of 0.1.0 import paths (it imports the new modules by name, when asked)
LAYERS = ["_moved", "errors", "backend", "nn", "models", "training", "io", "text", "lm", "run", "bench", "plot",
          "testing", "(package)", "cli"]


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((ROOT / "mlxrnn").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    for path in sorted((ROOT / "cli").glob("*.py")):
        name = "mlxrnn_cli" if path.stem == "__init__" else f"mlxrnn_cli.{path.stem}"
        files[name] = path
    return files


def layer_of(module: str) -> str:
    if module.startswith("mlxrnn_cli"):
        return "cli"
    parts = module.split(".")
    return "(package)" if len(parts) == 1 else parts[1]


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file (module or function level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            names = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        for name in names:
            while name and name not in known:  # `import a.b.c` of a function's module: its module
                name = name.rpartition(".")[0]
            if name and name != module and (name.startswith("mlxrnn.") or name.startswith("mlxrnn_cli")):
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_layer():
    unknown = sorted({layer_of(module) for module in module_files()} - set(LAYERS))
    assert not unknown, f"add these folders to LAYERS in {Path(__file__).name}: {unknown}"


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_nothing_imports_a_layer_above_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
              for module, targets in sorted(import_graph().items()) for target in sorted(targets)
              if rank[layer_of(target)] > rank[layer_of(module)]]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize(("source", "expected"), [
    ("from mlxrnn.run.loop import train_language_model\n", {"mlxrnn.run.loop"}),
    ("def f():\n    from mlxrnn.training.fit import fit\n", {"mlxrnn.training.fit"}),
    ("import mlxrnn.nn.cells\n", {"mlxrnn.nn.cells"}),
    ("from . import numba_minimal\n", {"mlxrnn.backend.numba_minimal"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mlxrnn.lm.model import LanguageModel\n",
     {"mlxrnn.lm.model"}),
])
def test_the_reader_sees_every_kind_of_import(tmp_path, source, expected):
    """The checks above are only as good as this reader: each import form it must catch."""
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    known = set(module_files())
    assert imports_of("mlxrnn.backend.probe", path, known) == expected


def test_a_circle_and_an_upward_import_are_found():
    graph = {"mlxrnn.models.task": {"mlxrnn.training.fit"}, "mlxrnn.training.fit": {"mlxrnn.models.task"}}
    assert circles(graph) == [["mlxrnn.models.task", "mlxrnn.training.fit"]]


def test_every_file_is_readable_in_one_sitting():
    """A module that grows past 400 lines has grown two jobs; a test file past 600, two topics."""
    limits = {"mlxrnn": 400, "cli": 400, "tests": 600}
    long = [f"{path.relative_to(ROOT)}: {n} lines (limit {limit})"
            for folder, limit in limits.items() for path in sorted((ROOT / folder).rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]
    assert not long, "split these by job:\n" + "\n".join(long)
