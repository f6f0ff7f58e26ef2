"""Stopping a training loop cleanly on SIGINT/SIGTERM.

A signal arriving mid-step would leave the model, the optimizer and the carried state out of
step with each other. :func:`deferred_signals` therefore only records it; the loop checks the
record between steps, saves, and stops. A second signal while the first is pending is acted on
at once (KeyboardInterrupt), so a stuck save can still be stopped.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (a second Ctrl-C is immediate).

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

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay as they are
            pass
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
