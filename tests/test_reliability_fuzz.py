"""Reliability, round two (issue 17): fuzzing the readers of a run directory.

Each test asserts what a successful call must return, not only that nothing else is raised:

* any run file replaced by a FIFO, a link to /dev/zero, a directory, a dangling link, a huge
  sparse file, an empty file or garbage, then loaded, resumed, saved into or replaced: a one-line
  mlxrnn error (never a hang), or a checkpoint that loads with finite weights at the asked step;
* pointer files with random bytes: a one-line error or a normalised path inside the run;
* the metrics log trimmed at a random step: complete lines only, none about a later step, every
  other line kept in order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from mlxrnn.errors import MLXRNNError
from mlxrnn.io.checkpoint import load_checkpoint, save_run_checkpoint
from mlxrnn.io.checkpoint.pointers import pointer_target
from mlxrnn.io.run_directory import RunDirectory
from mlxrnn.run.loop import TrainOptions, train_language_model
from tests.reliability_support import FUZZ, JSON_VALUES, TINY, char_run, corpus
from tests.test_reliability_files import no_hang

__all__ = ["char_run", "corpus"]  # module fixtures shared with test_reliability

RUN_FILES = ["last.json", "best.json", "CK/meta.json", "CK/model.safetensors", "CK/optimizer.safetensors",
             "metrics.jsonl", "options.json"]
KINDS = ["fifo", "dev zero", "directory", "dangling link", "huge sparse", "empty", "garbage"]
OPERATIONS = ["load last", "load best", "resume", "save", "force"]


def _replace(path: Path, kind: str, garbage: bytes) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "huge sparse":
        with open(path, "wb") as handle:
            handle.truncate(2 << 30)  # 2 GB that take no disk space: must not be read
    else:
        path.write_bytes(b"" if kind == "empty" else garbage)


@FUZZ
@given(target=st.sampled_from(RUN_FILES), kind=st.sampled_from(KINDS), operation=st.sampled_from(OPERATIONS),
       garbage=st.binary(max_size=64) | st.sampled_from([b"{}", b'{"checkpoint": "checkpoints"}', b"\n\n"]))
def test_fuzz_special_run_files(tmp_path, char_run, corpus, target, kind, operation, garbage):
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(char_run, run)
    last = json.loads((run / "last.json").read_text())["checkpoint"]
    _replace(run / target.replace("CK", last), kind, garbage)
    try:
        with no_hang():
            if operation.startswith("load"):
                loaded = load_checkpoint(run, tag=operation.split()[1])
                assert loaded.weights and all(np.isfinite(w).all() for w in loaded.weights.values())
                event(f"ok: {operation}")
                return
            if operation == "save":
                path = save_run_checkpoint(run, 99, {"w": np.ones(3, np.float32)}, {"step": 99})
                assert load_checkpoint(run).path == path and load_checkpoint(run).meta == {"step": 99}
                event(f"ok: {operation}")
                return
            if operation == "resume":
                summary = train_language_model(TrainOptions(steps=8, backend="numpy"), run, resume=True)
            else:
                summary = train_language_model(TrainOptions(corpus=str(corpus), backend="numpy",
                                                            **{**TINY, "steps": 2}), run, force=True)
    except MLXRNNError as error:
        assert "\n" not in str(error)
        event(f"refused: {type(error).__name__}")
        return
    assert load_checkpoint(run).meta["training"]["state"]["step"] == summary.steps == (8 if operation == "resume"
                                                                                       else 2)
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".run.")]  # no half-swapped sibling
    event(f"ok: {operation}")


@FUZZ
@given(content=st.binary(max_size=80) | JSON_VALUES.map(lambda v: json.dumps({"checkpoint": v}).encode())
       | st.lists(st.sampled_from(["checkpoints", "/", ".", "..", "step-1", "\\", ":", "a"]), max_size=6).map(
           lambda parts: json.dumps({"checkpoint": "".join(parts)}).encode()))
def test_fuzz_pointer_reader(tmp_path, content):
    pointer = Path(tempfile.mkdtemp(dir=tmp_path)) / "last.json"
    pointer.write_bytes(content)
    try:
        target = pointer_target(pointer)
    except MLXRNNError as error:
        assert "\n" not in str(error)
        event(f"refused: {type(error).__name__}")
        return
    parts = target.split("/")
    assert target and not target.startswith("/") and ".." not in parts and "." not in parts and "" not in parts
    assert "\\" not in target and ":" not in target
    event("ok")


RECORD = st.fixed_dictionaries({"event": st.sampled_from(["train", "eval", "start", "end"])},
                               optional={"step": st.integers(-2, 12) | st.booleans() | st.floats() | st.text(max_size=2)})
LINE = RECORD.map(json.dumps) | st.text(st.characters(blacklist_characters="\n"), max_size=12)


@FUZZ
@given(lines=st.lists(LINE, max_size=8), partial=st.text(st.characters(blacklist_characters="\n"), max_size=10),
       step=st.integers(0, 10))
def test_fuzz_metrics_trim(tmp_path, lines, partial, step):
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    (directory / "metrics.jsonl").write_text("".join(line + "\n" for line in lines) + partial, encoding="utf-8")
    RunDirectory(directory).trim_metrics(step)
    kept = (directory / "metrics.jsonl").read_text(encoding="utf-8")
    assert kept == "" or kept.endswith("\n")  # the partial last record is gone

    def later(line):
        try:
            value = json.loads(line).get("step")
        except (ValueError, AttributeError):
            return False
        return isinstance(value, int) and not isinstance(value, bool) and value > step

    assert kept.split("\n")[:-1] == [line for line in lines if not later(line)]
