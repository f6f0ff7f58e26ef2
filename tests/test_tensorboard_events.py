"""Runs that show up where people already look (issue 27, section 5): ``--tensorboard`` writes
TensorBoard event files beside ``metrics.jsonl``; they are read back here record by record."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

from mlxrnn.text.corpus import bundled_corpus_path

TINY = ["--layers", "1", "--hidden", "12", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--dropout",
        "0", "--backend", "numpy", "--sample-length", "0", "--log-every", "1", "--eval-every", "3"]


def _events(directory: Path) -> list:
    """Every event of the run's event files: the TFRecord framing (length, its CRC, the bytes,
    their CRC) read by hand, the events decoded with tensorboardX's own protobuf classes."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[at + 12 : at + 12 + length])
            events.append(event)
            at += 12 + length + 4
    return events


def _scalars(directory: Path) -> dict[str, dict[int, float]]:
    scalars: dict[str, dict[int, float]] = {}
    for event in _events(directory):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.fixture()
def corpus(tmp_path) -> str:
    path = tmp_path / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    return str(path)


def test_tensorboard_events_mirror_the_metrics_log(tmp_path, corpus):
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", corpus, "--out", str(run), "--steps", "6", "--tensorboard", *TINY])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(run / "tensorboard")
    train = {r["step"]: r["loss"] for r in records if r["event"] == "train"}
    assert sorted(scalars["train/loss"]) == sorted(train) == [1, 2, 3, 4, 5, 6]
    for step, loss in train.items():
        assert scalars["train/loss"][step] == pytest.approx(loss, rel=1e-6)
    evals = {r["step"]: r for r in records if r["event"] == "eval"}
    assert sorted(scalars["validation/loss"]) == sorted(evals) == [3, 6]
    assert scalars["validation/bpc"][6] == pytest.approx(evals[6]["val_bpc"], rel=1e-6)
    assert {"train/lr", "train/grad_norm", "train/tokens_per_second", "validation/perplexity"} <= set(scalars)


def test_without_tensorboardx_the_flag_fails_in_one_line_before_writing(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if it were not installed
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", corpus, "--out", str(run), "--steps", "2", "--tensorboard", *TINY])
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "--tensorboard" in line and "mlxrnn[tensorboard]" in line and "Traceback" not in result.output
    assert not run.exists()
