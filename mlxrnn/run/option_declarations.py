"""How a setting is declared: :func:`setting` (a dataclass field with its metadata), the checks
that validate values, the questions asked of one declaration (its choices, default, what is
wrong with a value), and how two sets of settings differ. :mod:`mlxrnn.run.options` declares
every setting of a run with these.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from typing import Any

from mlxrnn.errors import ConfigError
from mlxrnn.nn.cells import CELLS, cell_class, cell_option_names

#: a check returns None when the value is fine, else what is wrong with it (after the field name)
Check = Callable[[Any], "str | None"]


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    check: Check | None = None,
    model: str | None = None,
    resumable: bool = False,
    architecture: bool = False,
    flag: bool = True,
    argument: bool = False,
    legacy: Any = MISSING,
) -> Any:
    """Declare one option (a dataclass field with its metadata).

    Args:
        default: the default value (a ``dict``/``list`` default is copied per instance).
        help: one line for ``--help``; other settings are named in backquotes.
        choices: the allowed values (or a function returning them, for registries that grow).
        check: validates a non-None value (see :data:`Check`).
        model: the name of this setting in the model config, if it is one.
        resumable: whether a resumed run may change it: how the weights are updated from the next
            step on (learning rate and its schedule, clipping, early stopping), how often the run
            evaluates and logs, its budget and its backend. The others fix the model or its data.
        architecture: whether it shapes the weights or what their rows mean (cell, sizes, tokens):
            a run started from another's weights (``init_from``) takes these from that run.
        flag: False when the CLI builds the value from other flags (the cell options).
        argument: the CLI takes it as a positional argument instead of a flag.
        legacy: the value that reproduces what runs saved before this option existed did
            (:meth:`TrainOptions.from_saved` fills it in for them); default: ``default``.
    """
    metadata = {
        "help": help,
        "choices": choices,
        "check": check,
        "model": model,
        "resumable": resumable,
        "architecture": architecture,
        "flag": flag,
        "argument": argument,
        "legacy": legacy,
    }
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# --- checks: each says what is wrong, the caller puts the field name in front -----------------
def at_least(minimum: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            return f"must be an integer >= {minimum}, got {value!r}"
        return None

    return check


def within(condition: Callable[[float], bool], description: str) -> Check:
    """A number for which ``condition`` holds (NaN fails every comparison, so it is refused)."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and condition(float(value))
        return None if ok else f"{description}, got {value}"

    return check


def budget(value: float) -> bool:
    """A stopping budget (epochs, minutes): in (0, 1e9]; NaN and inf fail."""
    return 0 < value <= 1e9


probability = within(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


def one_word(value: Any) -> str | None:
    """A token written in text: no spaces ('' for none)."""
    if isinstance(value, str) and not any(c.isspace() for c in value):
        return None
    return f"must be one word without spaces or '', got {value!r}"


#: `eval_every` at each epoch's end (the PyTorch word_language_model example's cadence)
EPOCH = "epoch"


def count_or_word(word: str, minimum: int = 1) -> Check:
    """An integer >= ``minimum``, or ``word`` (``count_or_word("epoch")``: a step count or each epoch)."""
    count = at_least(minimum)

    def check(value: Any) -> str | None:
        if value == word or count(value) is None:
            return None
        return f"must be an integer >= {minimum} or {word!r}, got {value!r}"

    return check


def option_problem(spec: Field, value: Any) -> str | None:
    """What is wrong with ``value`` for the option ``spec`` (after its name), or None."""
    choices = option_choices(spec)
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    check = spec.metadata["check"]
    return check(value) if check is not None else None


def option_choices(spec: Field) -> tuple[str, ...] | None:
    """The allowed values of an option (registries are read when asked), or None for any."""
    choices = spec.metadata["choices"]
    return tuple(choices()) if callable(choices) else choices


def option_default(spec: Field) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


def merged_cell_options(cell: str, base: dict, given: dict) -> dict:
    """``base`` cell options updated by the ``given`` ones, which must be options of ``cell``."""
    valid = cell_option_names(cell)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        names = ", ".join(f"`{name}`" for name in unknown)
        raise ConfigError(f"{names} is not an option of the {cell} cell (it takes {', '.join(valid) or 'none'})")
    return {**(base or {}), **given}


def full_cell_options(cell: str, options: dict | None) -> dict:
    """Every option of ``cell``: its constructor's defaults updated by ``options``."""
    parameters = inspect.signature(cell_class(cell).__init__).parameters
    return {name: parameters[name].default for name in cell_option_names(cell)} | dict(options or {})


def option_changes(before: Any, after: Any) -> dict[str, list]:
    """``{name: [before, after]}`` for every setting that differs (JSON-ready, for logs)."""
    return {
        spec.name: [getattr(before, spec.name), getattr(after, spec.name)]
        for spec in fields(before)
        if getattr(before, spec.name) != getattr(after, spec.name)
    }


def describe_changes(before: Any, updates: dict[str, Any], names: list[str]) -> str:
    """"`hidden` 256 → 512, `peephole` False → True": the changes of ``names``, cell options one by one."""
    parts = []
    for name in names:
        if name == "cell_options":
            old = full_cell_options(before.cell, before.cell_options) if before.cell in CELLS else {}
            parts += [f"`{k}` {old.get(k)!r} → {v!r}" for k, v in updates[name].items() if old.get(k) != v]
        else:
            parts.append(f"`{name}` {getattr(before, name)!r} → {updates[name]!r}")
    return ", ".join(parts)


# --- settings that default to others (a class's ``DERIVED`` names, resolved in its __post_init__) --
def given_settings(options: Any) -> set[str]:
    """The settings of ``options`` that differ from their defaults: what a caller that passes
    whole options (rather than naming the ones it sets) is taken to have given. A derived
    setting counts as given when it differs from what its default resolves to beside the others
    (``min_lr`` = ``lr`` / 100 is not given; 0.2 between layers alone is the default dropout)."""
    derived = options.DERIVED
    plain = {spec.name: getattr(options, spec.name) for spec in fields(options) if spec.name not in derived}
    resolved = type(options)(**plain)  # the derived settings as their defaults resolve beside these
    given = {spec.name for spec in fields(options)
             if spec.name not in derived and getattr(options, spec.name) != option_default(spec)}
    return given | {name for name in derived if getattr(options, name) != getattr(resolved, name)}


def unresolved(options: Any) -> dict[str, Any]:
    """The fields of ``options`` with each derived setting that merely holds its resolved default
    set back to None, so that it is resolved again beside whatever replaces the others.

    One at a time, in ``DERIVED``'s order, so a chain keeps what was given: `tokenizer` words
    with `level` word resolved from it gives `level` None and `tokenizer` words; `dropout` 0.5
    with the ends resolved from it gives `embed_dropout` and `output_dropout` None.
    """
    values = {spec.name: getattr(options, spec.name) for spec in fields(options)}
    for name in options.DERIVED:
        if getattr(type(options)(**{**values, name: None}), name) == values[name]:
            values[name] = None
    return values
