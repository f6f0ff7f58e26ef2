"""Reliability, round two (issue 17): resuming checks the whole checkpoint and finds its corpus.

* every part of ``meta["training"]`` is validated before anything is restored: unknown keys (a
  newer mlxrnn's) are named, missing or malformed ones (RNG state, counters, schedule) and
  optimizer moments of the wrong shape are refused in one line, and the run is left as it was
  (item 3); a fuzz test edits random parts and asserts what a successful resume returns;
* the corpus path is stored absolute and ``train CORPUS --resume`` accepts a moved corpus whose
  text hashes the same, refusing another text clearly (item 6);
* a corpus whose file name is not UTF-8 is refused before training (item 7).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as st_numpy
from hypothesis import event, given
from hypothesis import strategies as st

from mlxrnn.errors import CheckpointError, ConfigError, DataError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import TrainOptions, train_language_model
from tests.reliability_support import (
    FUZZ,
    JSON_VALUES,
    TINY,
    TINY_FLAGS,
    assert_clean,
    char_run,
    corpus,
    invoke,
    tree_digest,
)

__all__ = ["char_run", "corpus"]  # module fixtures shared with test_reliability


def _last(run: Path) -> Path:
    return run / json.loads((run / "last.json").read_text())["checkpoint"]


def _edit_training(run: Path, edit) -> None:
    meta_path = _last(run) / "meta.json"
    doc = json.loads(meta_path.read_text())
    edit(doc["meta"]["training"])
    meta_path.write_text(json.dumps(doc))


def _edit_optimizer(run: Path, edit) -> None:
    ckpt = _last(run)
    tensors = st_numpy.load_file(str(ckpt / "optimizer.safetensors"))
    edit(tensors)
    data = st_numpy.save(tensors)
    (ckpt / "optimizer.safetensors").write_bytes(data)
    doc = json.loads((ckpt / "meta.json").read_text())
    doc["files"]["optimizer.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / "meta.json").write_text(json.dumps(doc))


def _resume(run: Path, steps: int = 8, **changes):
    return train_language_model(TrainOptions(steps=steps, backend="numpy", **changes), run, resume=True)


W_H = "rnn.l0.fwd.W_h"
META_FAULTS = {  # edit, the error, what the message says
    "an unknown key (a newer mlxrnn's)": (lambda t: t.update(from_the_future=1), CheckpointError,
                                          r"does not know \(from_the_future\); it was written by a newer mlxrnn"),
    "an unknown option": (lambda t: t["options"].update(warp_speed=9), CheckpointError,
                          r"options this mlxrnn does not know \(warp_speed\)"),
    "no rng": (lambda t: t.pop("rng"), CheckpointError, "lacks rng"),
    "no optimizer": (lambda t: t.pop("optimizer"), CheckpointError, "lacks optimizer"),
    "no corpus hash": (lambda t: t.pop("corpus_sha256"), CheckpointError, "lacks corpus_sha256"),
    "no schedule": (lambda t: t.pop("schedule"), CheckpointError, "lacks schedule"),
    "training state not a dict": (lambda t: t.update(state=[1, 2]), CheckpointError, "'state' is list, not dict"),
    "rng state an int": (lambda t: t["rng"].update(state=5), CheckpointError, "random-number state is malformed"),
    "rng of another generator": (lambda t: t["rng"].update(bit_generator="MT19937"), CheckpointError,
                                 "random-number state is malformed"),
    "rng a string": (lambda t: t.update(rng="x"), CheckpointError, "'rng' is str, not dict"),
    "step a string": (lambda t: t["state"].update(step="x"), CheckpointError, "saved state has step = 'x'"),
    "negative tokens": (lambda t: t["state"].update(tokens=-4), CheckpointError, "saved state has tokens = -4"),
    "a window past the epoch": (lambda t: t["state"].update(window=10**6), CheckpointError, "past the end of an epoch"),
    "step_count not a number": (lambda t: t["optimizer"].update(step_count="a"), CheckpointError,
                                "invalid step_count 'a'"),
    "negative learning rate": (lambda t: t["optimizer"].update(lr=-1), CheckpointError, "invalid learning rate -1"),
    "another optimizer's state": (lambda t: t["optimizer"].update(name="sgd"), CheckpointError,
                                  "optimizer state is for 'sgd', not 'adam'"),
    "schedule best a string": (lambda t: t["schedule"].update(best="low"), CheckpointError,
                               "schedule state is malformed"),
    "world_size a string": (lambda t: t.update(world_size="2"), CheckpointError, "'world_size' is str, not int"),
    "corpus hash not a hash": (lambda t: t.update(corpus_sha256="abc"), CheckpointError, "not a sha256"),
    "an invalid saved option": (lambda t: t["options"].update(hidden=0), CheckpointError,
                                "its saved option `hidden` must be an integer >= 1"),
    "options that do not build the model": (lambda t: t["options"].update(hidden=17), CheckpointError,
                                            r"weight 'rnn\.l0\.fwd\.W_\w' has shape"),
    "training not an object": (lambda t: t.clear(), DataError, "was not written by `mlxrnn train`"),
}
OPTIMIZER_FAULTS = {
    "a moment of the wrong shape": (lambda o: o.update({f"{W_H}/m": np.zeros((3, 3), np.float32)}),
                                    f"optimizer tensor '{W_H}/m' is float32 \\(3, 3\\)"),
    "a moment missing": (lambda o: o.pop(f"{W_H}/v"), f"the optimizer state of '{W_H}' holds \\['m'\\]"),
    "moments of a parameter the model lacks": (lambda o: o.update({"rnn.l9.fwd.W_h/m": np.zeros(2, np.float32)}),
                                               "which the model does not have"),
    "integer moments": (lambda o: o.update({f"{W_H}/v": o[f"{W_H}/v"].astype(np.int32)}), "is int32"),
    "a carried state of the wrong shape": (lambda o: o.update({"carry/0": np.zeros((1, 3, 16), np.float32)}),
                                           "its carried state has shapes"),
    "an LSTM's carried state without c": (lambda o: o.pop("carry/1"), "its carried state has shapes"),
}


@pytest.mark.parametrize("fault", list(META_FAULTS) + list(OPTIMIZER_FAULTS))
def test_a_damaged_training_state_is_refused_before_resuming(tmp_path, char_run, fault):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    if fault in META_FAULTS:
        edit, error, message = META_FAULTS[fault]
        _edit_training(run, edit)
    else:
        edit, message = OPTIMIZER_FAULTS[fault]
        error = CheckpointError
        _edit_optimizer(run, edit)
    before = tree_digest(run)
    with pytest.raises(error, match=message) as caught:
        _resume(run)
    assert "\n" not in str(caught.value)
    assert tree_digest(run) == before  # nothing restored, trimmed or written


def test_the_cli_reports_a_damaged_training_state_in_one_line(tmp_path, char_run):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    _edit_training(run, lambda t: t["rng"].update(state={"state": "x"}))
    assert_clean(invoke("train", "--resume", "--out", run, "--steps", "8", "--quiet"), 1,
                 "random-number state is malformed")


TRAINING_PARTS = [(), ("options",), ("optimizer",), ("schedule",), ("rng",), ("state",)]
TRAINING_KEYS = ["options", "optimizer", "schedule", "rng", "state", "corpus_sha256", "world_size", "step",
                 "epoch", "window", "tokens", "best_val", "initial_loss", "name", "step_count", "lr", "base_lr",
                 "best", "bad_evals", "bit_generator", "hidden", "seq_len", "batch_size", "cell", "steps"]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(TRAINING_PARTS), st.sampled_from(TRAINING_KEYS),
                                JSON_VALUES | st.sampled_from([0, -1, 3, 10**12, "adam", "plateau", None, True])),
                      min_size=1, max_size=3))
def test_fuzz_training_metadata(tmp_path, char_run, edits):
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(char_run, run)

    def apply(training):
        for path, key, value in edits:
            target = training
            for part in path:
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[key] = value

    _edit_training(run, apply)
    try:
        summary = _resume(run, steps=8)
    except (CheckpointError, DataError, ConfigError) as error:
        assert "\n" not in str(error)
        event(f"refused: {type(error).__name__}")
        return
    # A resume that goes through trains to the step asked for and saves a loadable checkpoint.
    event("resumed")
    assert summary.steps == 8 and np.isfinite(summary.last_val_loss)
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 8


# --------------------------------------------------------------------------------------------
# item 6: the corpus of a resumed run


def test_a_run_resumes_from_any_directory_and_with_its_moved_corpus(tmp_path, corpus, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(corpus, home / "text.txt")
    monkeypatch.chdir(home)
    train_language_model(TrainOptions(corpus="text.txt", backend="numpy", **{**TINY, "steps": 3}), "run")
    saved = load_checkpoint("run").meta["training"]["options"]["corpus"]
    assert saved == str(home / "text.txt")  # absolute, whatever the working directory was
    monkeypatch.chdir(tmp_path)
    _resume(home / "run", steps=4)  # from another directory
    (home / "text.txt").rename(tmp_path / "moved.txt")
    with pytest.raises(DataError, match="text.txt, is missing; pass its new path as CORPUS"):
        _resume(home / "run", steps=5)
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text() + "more")
    before = tree_digest(home / "run")
    assert_clean(invoke("train", other, "--resume", "--out", home / "run", "--steps", "5", "--quiet"), 1,
                 "is not the text this run was trained on")
    assert tree_digest(home / "run") == before
    result = invoke("train", "moved.txt", "--resume", "--out", home / "run", "--steps", "5", "--quiet",
                    "--sample-length", "0")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(home / "run").meta["training"]["options"]["corpus"] == str(tmp_path / "moved.txt")
    _resume(home / "run", steps=6)  # the new place is remembered


# --------------------------------------------------------------------------------------------
# item 7: a corpus file name that is not UTF-8


def test_a_corpus_name_that_is_not_utf8_fails_before_training(tmp_path, corpus):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    try:
        with open(raw, "wb") as handle:
            handle.write(corpus.read_bytes())
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    name = os.fsdecode(raw)
    with pytest.raises(DataError, match=r"the corpus file name b'.*caf\\xe9.txt' is not valid UTF-8"):
        train_language_model(TrainOptions(corpus=name, backend="numpy", **TINY), tmp_path / "run")
    assert_clean(invoke("train", name, *TINY_FLAGS, "--out", tmp_path / "run"), 1, "not valid UTF-8", "rename")
    assert not (tmp_path / "run").exists()
