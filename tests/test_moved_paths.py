"""Import paths of 0.1.0 (and of the 0.1.x layout) still import, each with a DeprecationWarning naming the new path."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import mlxrnn
from mlxrnn import _moved


@pytest.mark.parametrize(("old", "new"), sorted(_moved.MODULES.items()))
def test_a_moved_module_imports_with_a_warning_naming_its_new_path(monkeypatch, old, new):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        alias = importlib.import_module(old)
    assert alias is importlib.import_module(new)  # the same module: patches and identity hold


@pytest.mark.parametrize("old", sorted(set(_moved.NAMES) - set(_moved.PACKAGES)))
def test_a_split_010_module_imports_with_its_names(monkeypatch, old):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} was split") as caught:
        alias = importlib.import_module(old)
    for where, names in _moved.NAMES[old].items():
        assert where in str(caught[0].message)
        for name in names.split():
            assert getattr(alias, name) is getattr(importlib.import_module(where), name)


@pytest.mark.parametrize("package", _moved.PACKAGES)
def test_a_010_module_that_is_a_package_now_still_answers_its_names(package):
    module = importlib.import_module(package)
    for where, names in _moved.NAMES[package].items():
        for name in names.split():
            with pytest.warns(DeprecationWarning, match=f"{package}.{name} moved to {where}.{name}"):
                value = getattr(module, name)
            assert value is getattr(importlib.import_module(where), name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_the_010_readme_lines_run_and_the_warning_points_at_the_caller(monkeypatch):
    monkeypatch.delitem(sys.modules, "mlxrnn.interop", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec("from mlxrnn.interop import from_torch\nfrom mlxrnn.lm import language_model_config",  # noqa: S102
             {"__name__": "user_code"})
    assert [w.category for w in caught] and all(w.category is DeprecationWarning for w in caught)
    assert all(w.filename == "<string>" for w in caught), [w.filename for w in caught]


def test_the_new_paths_import_without_a_warning_and_public_names_stay():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for module in sorted(set(_moved.MODULES.values())):
            importlib.import_module(module)
        for name in mlxrnn.__all__:
            getattr(mlxrnn, name)
    assert mlxrnn.__version__ == "0.2.0"


def test_no_alias_shadows_a_public_name_of_the_package():
    """Importing a submodule sets it as an attribute of the package: an alias named like a public
    function (``mlxrnn.sample``) would replace that function."""
    aliases = {name.split(".")[1] for name in [*_moved.MODULES, *_moved.NAMES] if name.count(".") == 1}
    clashes = {name for name in aliases & set(mlxrnn.__all__) if name != "interop"}  # interop: the same module
    assert not clashes


def test_the_changelog_describes_this_version():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", text, flags=re.M)
    assert released and released[0] == mlxrnn.__version__, "add a CHANGELOG.md entry for the new version"
    assert re.search(r"^### (Added|Changed|Deprecated|Removed|Fixed|Security)$", text, flags=re.M)
