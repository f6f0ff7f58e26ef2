"""A one-line progress bar on stderr: step, loss, tokens/s and ETA.

On a terminal it redraws one line; in a log file (not a TTY) it prints a line every
``every_seconds`` so logs stay readable.
"""

from __future__ import annotations

import math
import sys
import time

from mlxrnn.lm.evaluation import perplexity
from mlxrnn.run.state import Progress


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def eval_line(p: Progress) -> str:
    """"step 200: validation loss 4.6052 (perplexity 100.00)  (lr 0.002)": a word model's loss
    with its perplexity, a character model's with its bits per character (how each is quoted)."""
    if p.level == "char":
        reading = f" ({p.val_loss / math.log(2):.3f} bits/char)"
    elif p.level is not None:
        reading = f" (perplexity {perplexity(p.val_loss):.2f})"
    else:
        reading = ""
    return f"step {p.step}: validation loss {p.val_loss:.4f}{reading}  (lr {p.lr:.3g})"


class ProgressBar:
    def __init__(self, stream=None, width: int = 24, every_seconds: float = 10.0, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.width, self.every_seconds, self.enabled = width, every_seconds, enabled
        self.is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_print = 0.0
        self._open_line = False

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        try:
            self._draw(p)
        except (OSError, ValueError):  # the terminal went away (SIGHUP, a closed ssh): train on, unseen
            self.enabled = False

    def _draw(self, p: Progress) -> None:
        if p.event == "eval":
            self._newline()
            self.stream.write(eval_line(p) + "\n")
            self.stream.flush()
            return
        now = time.monotonic()
        if not self.is_tty and now - self._last_print < self.every_seconds:
            return
        self._last_print = now
        if p.total_steps:
            filled = int(self.width * min(p.step / p.total_steps, 1.0))
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {p.step}/{p.total_steps}"
        else:
            bar = f"step {p.step}"
        line = (
            f"{bar}  epoch {p.epoch}  loss {p.loss:.4f}  {p.tokens_per_second:,.0f} tok/s  "
            f"elapsed {format_duration(p.elapsed)}  ETA {format_duration(p.eta_seconds)}"
        )
        if self.is_tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._open_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _newline(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def close(self) -> None:
        if not self.enabled:
            return
        try:
            self._newline()
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False
