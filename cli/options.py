"""Fields and flags: the one place where the library's setting names meet the command line.

* A :class:`~mlxrnn.run.options.TrainOptions` field ``val_frac`` is the flag ``--val-frac``
  (:func:`flag_name`), with the default, type, choices and help its declaration gives;
  :func:`train_options` generates those flags and :func:`options_from_flags` builds the
  TrainOptions back from click's values, so no option is spelled twice.
* The cells' own options come from :data:`CELL_FLAGS` (``variant`` is ``--gru-variant``).
* Library errors name fields in backquotes; :func:`flags_of` maps each parameter of the running
  command to its flag, so the user reads ``--val-frac`` (see :mod:`mlxrnn.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import Field
from typing import Any

import click

from mlxrnn.errors import spell_fields
from mlxrnn.nn.cells import cell_option_names
from mlxrnn.run.option_declarations import option_choices, option_default
from mlxrnn.run.option_types import option_fields, option_type, option_value_types
from mlxrnn.run.options import TrainOptions

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


class CountOrWord(click.ParamType):
    """An ``int | str`` setting such as `eval_every`: a count, or a word its declaration's check
    knows ("epoch"); the check, not click, refuses other words, naming the flag."""

    name = "integer|word"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) or not isinstance(value, str):
            return value
        try:
            return int(value)
        except ValueError:
            return value.strip()


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
    if {int, str} <= set(option_value_types(spec)):
        kind = CountOrWord()
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


def options_from_flags(
    values: dict[str, Any],
    typed: Collection[str] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    continuing: bool = False,
) -> TrainOptions:
    """TrainOptions from click's values of :func:`train_options`' parameters (which it consumes).

    ``typed``: the parameters given on the command line (None: every one); a parameter not typed
    takes its value from ``config`` (a ``--config`` file's settings), if there, else its
    default. ``continuing`` (``--resume``, ``--init-from``): the cell options are only those
    typed or in ``config``, since the run being continued knows its cell and the rest.
    """
    typed = set(values) if typed is None else set(typed)
    config = dict(config or {})
    config_cell = dict(config.pop("cell_options", None) or {})
    cell_values = {name: values.pop(name) for name in CELL_FLAGS}
    settings = {}
    for spec in option_fields():
        if spec.metadata["flag"]:
            value = values.pop(spec.name)
            settings[spec.name] = value if spec.name in typed or spec.name not in config else config[spec.name]
    typed_cell = {name: value for name, value in cell_values.items() if name in typed}
    if continuing:
        return TrainOptions.with_settings(None, {**settings, "cell_options": {**config_cell, **typed_cell}})
    # Each cell takes the options its constructor names (typed, else from the file, else the flags'
    # defaults); the others are unused, so `--cell gru` over an LSTM's options.json just works.
    chosen = {**cell_values, **config_cell, **typed_cell}
    names = cell_option_names(settings["cell"])
    cell_options = {name: chosen[name] for name in names if name in chosen}
    # the library's one resolution of settings that default to others, as train_language_model's
    return TrainOptions.with_settings(None, {**settings, "cell_options": cell_options})


def given_settings(typed: Collection[str], config: Mapping[str, Any] | None = None) -> set[str]:
    """The TrainOptions fields the user set: the flags typed (any cell flag sets ``cell_options``)
    and the keys of the ``--config`` file."""
    fields = {spec.name for spec in option_fields()}
    given = {name for name in typed if name in fields} | set(config or {})
    if any(name in CELL_FLAGS for name in typed):
        given.add("cell_options")
    return given


def typed_parameters(context: click.Context) -> set[str]:
    """The parameters of the running command given on the command line (or by the environment),
    as opposed to left at their defaults: click's ParameterSource tells them apart."""
    defaults = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)
    return {param.name for param in context.command.params if context.get_parameter_source(param.name) not in defaults}


def resume_rule() -> str:
    """The ``--resume`` help: which flags a resumed run applies, generated from the declarations."""
    applied = [
        flag_name(spec.name)
        for spec in option_fields()
        if spec.metadata["resumable"] and spec.metadata["flag"] and not spec.metadata["argument"]
    ]
    return (
        "Continue the run in --out from its last checkpoint. Flags you leave out keep the run's values. "
        f"Given, these apply from the next step and are logged: {', '.join(applied)} and CORPUS (CORPUS, --valid "
        "and --test may name the same text at another path); a new --epochs/--steps/--minutes replaces the whole "
        "saved budget; --lr also resets a decayed rate, and a new --schedule starts at the current rate. Any "
        "other flag that differs from the run's (a model or data setting such as --hidden or --seq-len) is refused."
    )


def init_from_rule() -> str:
    """The ``--init-from`` help: which flags come from the source run, generated from the declarations."""
    kept = [flag_name(spec.name) for spec in option_fields() if spec.metadata["architecture"] and spec.metadata["flag"]]
    return (
        "Start a new run from the weights of RUN (its best checkpoint), e.g. on another CORPUS. The model flags "
        f"({', '.join(kept)} and the cell's own) come from RUN and may not differ; tokens of CORPUS that RUN's "
        "vocabulary lacks get fresh embedding and output rows (--min-count filters them, --max-vocab caps the "
        "total: RUN's size keeps its vocabulary, new tokens then read as <UNK>). Other settings are this run's "
        "own; add --config RUN/options.json to reuse RUN's."
    )


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
