"""The installed distribution holds every package of the source tree.

pyproject.toml lists its packages by name (the CLI is installed from ./cli as ``mlxrnn_cli``),
so a new sub-package that is not added there works in an editable install and is missing from
a wheel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib is Python 3.11+")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "mlxrnn").rglob("__init__.py")}
    assert found, "no packages found under mlxrnn/"
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
