"""The API reference (docs/, built with ``mkdocs build --strict`` from the ``docs`` extra) covers
every module, and every public name has a docstring to show there (issue 27, section 4)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import mlxrnn

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(mlxrnn.__path__, "mlxrnn."):
        parts = info.name.split(".")
        if not any(part.startswith("_") for part in parts[1:]) and parts[1] != "corpora":
            names.append(info.name)
    return names


#: optional dependencies: a module that needs one is read from its source where it is not installed
OPTIONAL = {"numba", "mlx", "tokenizers", "tensorboardX", "threadpoolctl", "matplotlib"}


def _import(name: str):
    """The module, or None when it needs an optional dependency this install lacks (the full CI
    install has them all, so there every module is imported and checked)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in OPTIONAL:
            return None
        raise


def _docstring(name: str) -> str | None:
    module = _import(name)
    if module is not None:
        return module.__doc__
    path = Path(importlib.util.find_spec(name).origin)
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))


def _public_names() -> dict[str, object]:
    """Every name a module exports in its ``__all__`` (the top level's and each package's)."""
    found = {}
    for name in ["mlxrnn", *_modules()]:
        module = _import(name)
        if module is None:
            continue
        for public in getattr(module, "__all__", ()):
            found[f"{name}.{public}"] = getattr(module, public)
    return found


def _undocumented(qualified: str, obj: object) -> list[str]:
    """``qualified`` if it lacks a docstring, and its public methods and properties that lack one
    (inherited docstrings count). A Protocol's members are the array API standard's functions,
    documented there and by the class."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return []
    missing = [] if inspect.getdoc(obj) else [qualified]
    if inspect.isclass(obj) and not getattr(obj, "_is_protocol", False):
        for name, member in inspect.getmembers(obj):
            if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                continue
            if getattr(member, "__module__", "mlxrnn").split(".")[0] != "mlxrnn" and not isinstance(member, property):
                continue  # inherited from the standard library (a dataclass's or Protocol's helpers)
            if not inspect.getdoc(member):
                missing.append(f"{qualified}.{name}")
    return missing


def test_every_module_has_a_docstring_and_an_api_page():
    pages = "\n".join(path.read_text(encoding="utf-8") for path in (DOCS / "api").glob("*.md"))
    listed = set(re.findall(r"^::: (\S+)$", pages, flags=re.M))
    assert [name for name in _modules() if name not in listed] == [], "add them to a page of docs/api/"
    assert [name for name in _modules() if not _docstring(name)] == []


def test_every_public_name_has_a_docstring():
    missing = sorted({entry for name, obj in _public_names().items() for entry in _undocumented(name, obj)})
    assert missing == [], f"{len(missing)} public names without a docstring: {missing}"


def test_the_guides_include_readme_sections_that_exist():
    import sys

    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        from readme_sections import DIRECTIVE, readme_section
    finally:
        sys.path.pop(0)
    for guide in (DOCS / "guides").glob("*.md"):
        for heading in DIRECTIVE.findall(guide.read_text(encoding="utf-8")):
            assert readme_section(heading).strip(), (guide.name, heading)
