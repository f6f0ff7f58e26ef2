"""The types of the run's settings, read from :class:`~mlxrnn.run.options.TrainOptions`'s
annotations: what the CLI builds its flags from and ``--config`` files are checked against.
"""

from __future__ import annotations

import typing
from dataclasses import Field, fields

from mlxrnn.run.options import TrainOptions, type_hints


def option_type(spec: Field) -> type:
    """The value type of an option, without its ``| None`` (``int | None`` → ``int``)."""
    hint = type_hints()[spec.name]
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return typing.get_origin(options[0]) or options[0]


def option_value_types(spec: Field) -> tuple[type, ...]:
    """Every value type an option takes, without None (``int | str`` → ``(int, str)``)."""
    hint = type_hints()[spec.name]
    return tuple(typing.get_origin(arg) or arg for arg in (typing.get_args(hint) or (hint,)) if arg is not type(None))


def option_fields() -> tuple[Field, ...]:
    """The declarations of every option, in order."""
    return fields(TrainOptions)
