"""TensorBoard event files beside ``metrics.jsonl``, so a run shows up where Keras and PyTorch
runs already do (``tensorboard --logdir runs``).

Written only when asked (`tensorboard`), with tensorboardX (the ``tensorboard`` extra:
``pip install 'mlxrnn[tensorboard]'``), imported only then. The events mirror the metrics log:
every "train" record gives ``train/loss``, ``train/grad_norm``, ``train/lr``,
``train/tokens_per_second`` and ``train/clip_rate``; every "eval" record ``validation/loss``,
``validation/perplexity`` (and ``validation/bpc``); the "test" record ``test/loss`` and
``test/perplexity``, each at its step; the start-up line is kept as text. A resumed run purges
the events after its checkpoint's step, which it trains again (as it trims ``metrics.jsonl``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxrnn.errors import ConfigError

#: record event -> {record key: TensorBoard tag}
TAGS: dict[str, dict[str, str]] = {
    "train": {"loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr",
              "tokens_per_second": "train/tokens_per_second", "clip_rate": "train/clip_rate"},
    "eval": {"val_loss": "validation/loss", "val_perplexity": "validation/perplexity", "val_bpc": "validation/bpc"},
    "test": {"test_loss": "test/loss", "test_perplexity": "test/perplexity", "test_bpc": "test/bpc"},
}


def summary_writer_class() -> Any:
    """tensorboardX's SummaryWriter, or a one-line ConfigError saying how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("needs tensorboardX to write event files: pip install 'mlxrnn[tensorboard]' (or "
                          "leave `tensorboard` out)", field="tensorboard") from None
    return SummaryWriter


class TensorBoardLog:
    """Writes the run's records as TensorBoard scalars in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, step: int = 0):
        writer_class = summary_writer_class()
        # purge_step: a resumed run drops the events after its checkpoint, which it trains again
        self.writer = writer_class(str(directory), purge_step=step or None, flush_secs=30)

    def record(self, record: dict[str, Any]) -> None:
        """Write one metrics record as scalars at its step (see :data:`TAGS`)."""
        event, step = record.get("event"), record.get("step", 0)
        if event == "start" and isinstance(record.get("plan"), dict):
            self.writer.add_text("run/plan", record["plan"]["line"], step)
        for key, tag in TAGS.get(event, {}).items():
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)
        if event in ("eval", "test", "end", "interrupted", "diverged"):
            self.writer.flush()  # what a user looks at now is on disk now

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
