"""Shared CLI plumbing: turning library errors into one-line messages and exit codes.

Usage errors (bad flags, bad hyper-parameters) exit 2 like click's own; data, checkpoint and
environment errors exit 1; Ctrl-C exits 130. None prints a traceback: anything that still
escapes as one is a bug in mlxrnn. Standard output has one error path too (:func:`guard_stdout`):
a full device or a closed stdout is one line and exit 1 on every command.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from mlxrnn.errors import BackendUnavailable, ConfigError, MLXRNNError, WriteError
from mlxrnn.io.files import os_error_advice

from .options import flags_of

EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 2, 1, 130


def fail(message: str, code: int) -> None:
    """Print ``Error: message`` (one line) on stderr and exit with ``code``."""
    try:
        click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    except (OSError, ValueError):  # stderr is gone too (a closed terminal): the exit status still says it
        pass
    sys.exit(code)


class _GuardedOutput(io.RawIOBase):
    """Standard output's file descriptor, whose write errors are one :class:`WriteError` line.

    A full device (``> /dev/full``), a file-size limit or a vanished terminal would otherwise
    escape as an OSError traceback from deep inside click, or as "Exception ignored" at exit.
    After the first failure every write is dropped, so the exit-time flush stays quiet. A closed
    pipe (``| head``) still raises BrokenPipeError, which :class:`Application` ends quietly.
    """

    def __init__(self, fd: int):
        super().__init__()
        self.fd, self.broken = fd, False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data) -> int:  # noqa: ANN001 - a bytes-like object
        if self.broken:
            return len(data)
        try:
            return os.write(self.fd, data)
        except BrokenPipeError:
            raise
        except OSError as error:
            self.broken = True
            raise WriteError(f"cannot write to standard output: {os_error_advice(error)}") from None


def guard_stdout() -> None:
    """Route the process's standard output through :class:`_GuardedOutput` (same encoding,
    errors and line buffering); fail in one line at once when it is closed (``>&-``)."""
    stdout = sys.stdout
    if stdout is None:  # started with fd 1 closed: nothing the command prints could go anywhere
        fail("standard output is closed; give the command somewhere to write (e.g. > /dev/null)", EXIT_ERROR)
    if stdout is not sys.__stdout__ or not hasattr(stdout, "fileno"):
        return  # already redirected in-process (tests, embedding): leave it alone
    try:
        fd = stdout.fileno()
        stdout.flush()
    except (OSError, ValueError):
        return
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_GuardedOutput(fd)), encoding=stdout.encoding,
                                  errors=stdout.errors, line_buffering=stdout.line_buffering)


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
                result = command(*args, **kwargs)
            if sys.stdout is not None:
                sys.stdout.flush()  # a write error of the last lines is reported here, not at exit
            return result
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


def interrupt_outside_finalizers(signum: int, frame: Any) -> None:
    """SIGINT as KeyboardInterrupt (Python's own handler), except when it lands inside a
    finalizer (``__del__``, a weakref callback): Python would print "Exception ignored" there and
    lose the Ctrl-C (e.g. while compiled kernels are being released during setup), so it is sent
    again a moment later instead, when ordinary code runs."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith(("weakref.py", "_weakrefset.py")):
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


class Application(click.Group):
    """The ``mlxrnn`` group: click's own errors (bad flag values, missing arguments) also print
    one line and exit 2, and Ctrl-C outside a command's own handling exits 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        guard_stdout()
        handler = None
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            handler = signal.signal(signal.SIGINT, interrupt_outside_finalizers)
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
        except WriteError as error:  # standard output failed while click itself printed (--help, --version)
            fail(str(error), EXIT_ERROR)
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise
            # The reader went away (e.g. `mlxrnn sample RUN | head`): stop quietly, and keep
            # Python's exit-time flush of the dead pipe from printing anything either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
        sys.exit(result if isinstance(result, int) else 0)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))



def inference_threads(lm, batch: int) -> None:
    """BLAS threads for a loaded model's batch-``batch`` forward passes (eval, score, sample): by
    the per-step product alone (mlxrnn/backend/threads.py), so batch 1 runs on one thread, which
    is also what a busy machine needs; nothing on MLX or when the user set a thread variable."""
    from mlxrnn.backend.threads import threads_for_recurrent_loop

    if lm.xp.name != "numpy":
        return
    spec = lm.model.config.recurrent
    gates = lm.model.rnn.cells[0].num_gates
    threads_for_recurrent_loop(int(batch or 1), spec.hidden_size, gates, measure_load=False)
