"""Helpers and fixtures of the checkpoint tests: small weights, on-disk edits, pointers."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint import (
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL, OPTIM, META = "model.safetensors", "optimizer.safetensors", "meta.json"
SHAPES = {"rnn.l0.fwd.W_x": (3, 4), "rnn.l0.fwd.W_h": (4, 4), "head.b": (5,)}
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------------------------------
# helpers


def weights_for(step: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(step))
    return {
        "rnn.l0.fwd.W_x": rng.standard_normal((3, 4)).astype(np.float32) + np.float32(step),
        "rnn.l0.fwd.W_h": rng.standard_normal((4, 4)).astype(np.float32),
        "head.b": rng.standard_normal(5),  # float64
    }


def optimizer_for() -> dict[str, np.ndarray]:
    return {
        "adam.m.rnn.l0.fwd.W_h": np.full((4, 4), 0.25, np.float32),
        "adam.v.head.b": np.linspace(0.0, 1.0, 5),
        "adam.t": np.array(7, np.int64),
        "adam.mask": np.arange(3, dtype=np.int32),
    }


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (relative path -> bytes), including empty dirs."""
    out: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel] = path.read_bytes() if path.is_file() else b"<dir>"
    return out


def fix_sha(ckpt: Path, name: str) -> None:
    """Simulate a deliberate tamper: make meta.json agree with the (modified) file."""
    doc = json.loads((ckpt / META).read_text())
    data = (ckpt / name).read_bytes()
    doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / META).write_text(json.dumps(doc))


def edit_meta(ckpt: Path, edit) -> None:
    doc = json.loads((ckpt / META).read_text())
    edit(doc)
    (ckpt / META).write_text(json.dumps(doc))


def rewrite_header(path: Path, mutate) -> None:
    """Apply ``mutate`` to the JSON header of a safetensors file, keeping the data bytes."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    mutate(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def header_end(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def pointer(run: Path, tag: str) -> str:
    return json.loads((run / f"{tag}.json").read_text())["checkpoint"]


def step_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def expect_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "ck", weights_for(1), {"step": 1, "config": {"hidden": 4}}, optimizer_for())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


