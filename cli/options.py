"""Fields and flags: the one place where the library's setting names meet the command line.

* A :class:`~mlxrnn.lm.options.TrainOptions` field ``val_frac`` is the flag ``--val-frac``
  (:func:`flag_name`), with the default, type, choices and help its declaration gives;
  :func:`train_options` generates those flags and :func:`options_from_flags` builds the
  TrainOptions back from click's values, so no option is spelled twice.
* The cells' own options come from :data:`CELL_FLAGS` (``variant`` is ``--gru-variant``).
* Library errors name fields in backquotes; :func:`flags_of` maps each parameter of the running
  command to its flag, so the user reads ``--val-frac`` (see :mod:`mlxrnn.errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field
from typing import Any

import click

from mlxrnn.errors import spell_fields
from mlxrnn.lm.options import (
    TrainOptions,
    option_choices,
    option_default,
    option_fields,
    option_type,
)
from mlxrnn.nn.cells import cell_option_names

#: a cell option (a keyword of the cell class) -> its flag; each cell takes those it names
CELL_FLAGS: dict[str, Callable] = {
    "activation": click.option(
        "--activation",
        type=click.Choice(["tanh", "relu"]),
        default="tanh",
        show_default=True,
        help="Vanilla RNN activation.",
    ),
    "variant": click.option(
        "--gru-variant",
        "variant",
        type=click.Choice(["full", "reset_after", "simple"]),
        default="full",
        show_default=True,
        help="GRU form: the notes' full GRU, PyTorch's reset-after, or update-gate only.",
    ),
    "peephole": click.option("--peephole", is_flag=True, help="LSTM: add peephole connections."),
}


def flag_name(field_name: str) -> str:
    """The flag of a TrainOptions field: ``val_frac`` → ``--val-frac``."""
    return "--" + field_name.replace("_", "-")


def _train_flags() -> dict[str, str]:
    return {spec.name: flag_name(spec.name) for spec in option_fields()}


def option_for(spec: Field) -> Callable:
    """The click option (or, for ``argument`` settings, the argument) of one TrainOptions field."""
    kind, default = option_type(spec), option_default(spec)
    if spec.metadata["argument"]:  # positional settings are paths (the corpus)
        return click.argument(spec.name, required=False, default=default, type=click.Path(path_type=str))
    help_text = spell_fields(spec.metadata["help"], _train_flags()) or None
    if kind is bool:  # off by default: --name; on by default: --name/--no-name
        flags = flag_name(spec.name) if not default else f"{flag_name(spec.name)}/--no-{flag_name(spec.name)[2:]}"
        return click.option(flags, spec.name, is_flag=True, default=default, show_default=bool(default),
                            help=help_text)
    choices = option_choices(spec)
    return click.option(
        flag_name(spec.name),
        spec.name,
        type=click.Choice(list(choices)) if choices is not None else kind,
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def train_options(command: Callable) -> Callable:
    """Decorator: every TrainOptions field as a click parameter, in declaration order (the cell
    flags where ``cell_options`` is declared)."""
    decorators: list[Callable] = []
    for spec in option_fields():
        decorators.extend(CELL_FLAGS.values() if not spec.metadata["flag"] else [option_for(spec)])
    for decorator in reversed(decorators):  # click lists parameters in the order they were added, last first
        command = decorator(command)
    return command


def options_from_flags(values: dict[str, Any]) -> TrainOptions:
    """TrainOptions from click's values of :func:`train_options`' parameters (which it consumes)."""
    cell_values = {name: values.pop(name) for name in CELL_FLAGS}
    # Each cell takes the flags its constructor names; the others keep their defaults unused.
    cell_options = {name: cell_values[name] for name in cell_option_names(values["cell"]) if name in cell_values}
    settings = {spec.name: values.pop(spec.name) for spec in option_fields() if spec.metadata["flag"]}
    return TrainOptions(**settings, cell_options=cell_options)


def flags_of(command: click.Command | None) -> dict[str, str]:
    """Each parameter of ``command`` (named like the library field it sets) -> how the user
    spells it: its long flag (``run_dir`` → ``--out``), or an argument's metavar (``CORPUS``)."""
    if command is None:
        return {}
    flags = {}
    for param in command.params:
        if isinstance(param, click.Option):
            flags[param.name] = max(param.opts, key=len)
        else:
            flags[param.name] = param.human_readable_name
    return flags


#: shared by every command that reads a text file (declared once, on TrainOptions.encoding_errors)
encoding_errors_option = option_for(next(spec for spec in option_fields() if spec.name == "encoding_errors"))
