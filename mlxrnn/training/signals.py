"""Stopping a training loop cleanly on SIGINT, SIGTERM and SIGHUP.

A signal arriving mid-step would leave the model, the optimizer and the carried state out of
step with each other. :func:`deferred_signals` therefore only records it; the loop checks the
record between steps, saves, and stops. A second signal while the first is pending is acted on
at once (KeyboardInterrupt), so a stuck save can still be stopped.

SIGHUP (the terminal closed, an ssh connection dropped) would otherwise end the process without
saving; it is treated like SIGTERM, unless it was ignored when training began (``nohup``), in
which case it stays ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

#: the signals that stop training after a save (SIGHUP does not exist on Windows)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM/SIGHUP into a flag the loop checks between steps (a second Ctrl-C is immediate).

    Yields the list the received signal numbers are appended to. Outside the main thread,
    where handlers cannot be installed, signals keep their usual behaviour.
    """
    received: list[int] = []
    previous = {}

    def handler(signum, frame):
        if received:  # asked twice: stop now
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        received.append(signum)

    for sig in STOP_SIGNALS:
        try:
            if sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # nohup asked for hangups to be ignored
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay as they are
            pass
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
