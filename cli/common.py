"""Shared CLI plumbing: turning library errors into one-line messages and exit codes.

Usage errors (bad flags, bad hyper-parameters) exit 2 like click's own; data, checkpoint and
environment errors exit 1; Ctrl-C exits 130. None prints a traceback: anything that still
escapes as one is a bug in mlxrnn.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from mlxrnn.errors import BackendUnavailable, ConfigError, MLXRNNError

from .options import flags_of

EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 2, 1, 130


def fail(message: str, code: int) -> None:
    """Print ``Error: message`` (one line) on stderr and exit with ``code``."""
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def handle_errors(command: Callable) -> Callable:
    """Decorator: report MLXRNNError as ``Error: ...`` on stderr and exit 2 (usage) or 1; the
    fields the message names are shown as the command's flags.

    Also: Ctrl-C exits 130 with one line, running out of memory exits 1 with advice, and NumPy's
    floating-point warnings stay quiet (a diverging loss is reported by the trainer itself).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                return command(*args, **kwargs)
        except MLXRNNError as error:
            # The library names settings by field; the user typed flags (val_frac -> --val-frac).
            context = click.get_current_context(silent=True)
            message = error.message_with(flags_of(context.command if context else None))
            fail(message, EXIT_USAGE if isinstance(error, ConfigError) else EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo(err=True)  # end the line the terminal's ^C is on
            fail("interrupted (Ctrl-C); nothing more was written", EXIT_INTERRUPTED)
        except MemoryError:
            fail(
                "out of memory; use a smaller model or batch (--hidden, --layers, --batch-size, --seq-len, "
                "--num-samples)",
                EXIT_ERROR,
            )

    return wrapper


def check_backend(name: str | None) -> None:
    """Fail early, in one line, when the backend cannot be used (MLX missing *or* broken).

    ``get_backend`` reports a missing MLX itself; an installed MLX whose import fails (a missing
    shared library, a wrong wheel) would otherwise escape as an ImportError traceback.
    """
    from mlxrnn.backend import get_backend

    try:
        get_backend(name)
    except (ImportError, OSError) as error:
        raise BackendUnavailable(
            f"MLX is installed but cannot be imported ({' '.join(str(error).split())}); reinstall it "
            "(pip install --force-reinstall mlx) or use --backend numpy"
        ) from None


def one_line_usage_error(error: click.UsageError) -> str:
    """Click's usage error as one line, with where to get help instead of the usage block."""
    hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
    return f"{' '.join(error.format_message().split())}{hint}"


class Application(click.Group):
    """The ``mlxrnn`` group: click's own errors (bad flag values, missing arguments) also print
    one line and exit 2, and Ctrl-C outside a command's own handling exits 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `mlxrnn`: the help is the message
                error.show()
                sys.exit(error.exit_code)
            fail(one_line_usage_error(error), EXIT_USAGE)
        except click.Abort:  # click's translation of KeyboardInterrupt / EOF during parsing
            fail("interrupted (Ctrl-C); nothing more was written", EXIT_INTERRUPTED)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise
            # The reader went away (e.g. `mlxrnn sample RUN | head`): stop quietly, and keep
            # Python's exit-time flush of the dead pipe from printing anything either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else 0)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))

