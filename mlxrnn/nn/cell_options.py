"""What a cell's own options must be: the types read from the cells' constructors.

A settings file or a library call may give ``cell_options`` such as ``{"peephole": "no"}``;
these are checked here, by the type of each option's default, before any cell is built (which
options the chosen cell takes is checked where it is built, :func:`mlxrnn.nn.cells.make_cell`).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from mlxrnn.nn.cells import CELLS, cell_class, cell_option_names


def cell_option_kinds() -> dict[str, type]:
    """Every option some cell takes -> the type of its default (bool, float or str): what a
    value for it must be (an integer is a float too)."""
    kinds: dict[str, type] = {}
    for name in CELLS:
        parameters = inspect.signature(cell_class(name).__init__).parameters
        for option in cell_option_names(name):
            kinds[option] = type(parameters[option].default)
    return kinds


def cell_options_problem(options: Any) -> str | None:
    """What is wrong with a table of cell options (an option no cell takes, or a value of the
    wrong type), or None. Which options the chosen cell takes is checked where it is built."""
    if not isinstance(options, dict):
        return f"must be a table of the cell's options, got {type(options).__name__}"
    kinds = cell_option_kinds()
    for name, value in options.items():
        if name not in kinds:
            return f"{name!r:.40} is not an option of any cell (they take {', '.join(sorted(kinds))})"
        kind = kinds[name]
        if kind is bool:
            ok = isinstance(value, (bool, np.bool_))
        elif kind is float:
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        else:
            ok = isinstance(value, kind)
        if not ok:
            what = {bool: "true or false", float: "a number", str: "a string"}.get(kind, kind.__name__)
            return f"{name} must be {what}, got {value!r:.40}"
    return None
