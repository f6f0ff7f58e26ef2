"""Shared CLI plumbing: turning library errors into one-line messages and exit codes.

Usage errors (bad flags, bad hyper-parameters) exit 2 like click's own; data, checkpoint and
environment errors exit 1. Neither prints a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from mlxrnn.errors import ConfigError, MLXRNNError


def handle_errors(command: Callable) -> Callable:
    """Decorator: report MLXRNNError as ``Error: ...`` on stderr and exit 2 (usage) or 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except MLXRNNError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)

    return wrapper


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))
