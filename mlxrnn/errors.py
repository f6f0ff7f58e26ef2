"""The library's exceptions.

Every error a user can cause is a subclass of :class:`MLXRNNError`, whose message is one line
that says what was wrong and how to fix it. The CLI turns these into a clean exit (no
traceback); anything else escaping is a bug in mlxrnn.
"""

from __future__ import annotations


class MLXRNNError(Exception):
    """Base class for errors caused by input, configuration or environment."""


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


class MissingExtra(MLXRNNError, ImportError):
    """An optional dependency (an extra such as ``mlxrnn[plot]``) is not installed."""
