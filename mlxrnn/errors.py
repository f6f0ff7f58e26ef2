"""The library's exceptions.

Every error a user can cause is a subclass of :class:`MLXRNNError`, whose message is one line
that says what was wrong and how to fix it. The CLI turns these into a clean exit (no
traceback); anything else escaping is a bug in mlxrnn.

A message names a setting by its *field* (the library's name, e.g. ``val_frac``) in backquotes:
"`val_frac` must be in (0, 1), got 0". The error lists those names in :attr:`fields`, and a
front end shows them in its own spelling with :meth:`MLXRNNError.message_with` (the CLI shows
``--val-frac``), so the library never needs to know the CLI's flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: how a message refers to a field: the identifier in backquotes
FIELD_REFERENCE = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def spell_fields(text: str, names: Mapping[str, str]) -> str:
    """``text`` with each backquoted field that ``names`` knows spelled its way (``{"lr": "--lr"}``);
    fields ``names`` does not know keep their backquotes."""
    return FIELD_REFERENCE.sub(lambda m: names.get(m.group(1), m.group(0)), text)


class MLXRNNError(Exception):
    """Base class for errors caused by input, configuration or environment.

    ``field`` (optional) is the setting the message is about; it is put in front of the
    message: ``ConfigError("must be > 0, got 0", field="lr")`` reads "`lr` must be > 0, got 0".
    """

    def __init__(self, message: str = "", *args: object, field: str | None = None):
        if field is not None:
            message = f"`{field}` {message}"
        super().__init__(message, *args)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the message names, in order of first mention."""
        return tuple(dict.fromkeys(FIELD_REFERENCE.findall(str(self.args[0]) if self.args else "")))

    @property
    def field(self) -> str | None:
        """The first field the message names (its subject, when it has one), else None."""
        return self.fields[0] if self.fields else None

    def message_with(self, names: Mapping[str, str]) -> str:
        """The message with the fields spelled as in ``names`` (see :func:`spell_fields`)."""
        return spell_fields(str(self), names)


class ConfigError(MLXRNNError, ValueError):
    """A hyper-parameter, shape or option is invalid (a usage error)."""


class ShapeError(ConfigError):
    """An array argument has the wrong shape or dtype."""


class BackendUnavailable(MLXRNNError, RuntimeError):
    """The requested array backend cannot be used on this machine."""


class DataError(MLXRNNError):
    """A corpus or data file cannot be used (missing, empty, undecodable, too short)."""


class CheckpointError(MLXRNNError):
    """A checkpoint is missing, corrupted, tampered with, or from an unsupported format."""


class WriteError(MLXRNNError):
    """A file or stream cannot be written (disk full, read-only, a file-size limit, closed
    output); the message names it, and nothing saved before was changed."""


class TrainingDiverged(MLXRNNError):
    """The loss became NaN/Inf or exploded; the last good checkpoint was kept."""


class Interrupted(MLXRNNError):
    """Training was stopped by a signal after saving a checkpoint; ``signal_number`` says which."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class MissingExtra(MLXRNNError, ImportError):
    """An optional dependency (an extra such as ``mlxrnn[plot]``) is not installed."""
