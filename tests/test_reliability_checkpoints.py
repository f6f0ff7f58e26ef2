"""Reliability: missing, truncated, corrupted, tampered, foreign, newer or inconsistent checkpoints
through sample, score and eval fail in one line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as st_numpy

from tests.reliability_support import (  # noqa: F401 (pytest fixtures)
    assert_clean,
    char_run,
    checkpoint_dir,
    corpus,
    edit_meta,
    invoke,
    rehash,
    rewrite_file,
    tree_digest,
)

# --------------------------------------------------------------------------------------------
# checkpoints: missing, truncated, corrupted, tampered, foreign, newer, inconsistent


def _edit_weights(ckpt: Path, edit) -> None:
    weights = st_numpy.load_file(str(ckpt / "model.safetensors"))
    edit(weights)
    rewrite_file(ckpt / "model.safetensors", st_numpy.save(weights))
    rehash(ckpt)


def _truncate(ckpt: Path, name: str) -> None:
    data = (ckpt / name).read_bytes()
    rewrite_file(ckpt / name, data[: len(data) // 2])


def _flip(ckpt: Path) -> None:
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-7] ^= 0xFF
    rewrite_file(ckpt / "model.safetensors", bytes(data))


def _tamper_header(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    rewrite_file(ckpt / "model.safetensors", data[:8] + data[8 : 8 + n].replace(b'"F32"', b'"F16"', 1) + data[8 + n :])
    rehash(ckpt)


def _recurrent(doc: dict) -> dict:
    """The recurrent settings of a checkpoint's model config (nested since RecurrentSpec)."""
    return doc["meta"]["model_config"]["recurrent"]


def _shrink_vocab(doc: dict) -> None:
    doc["meta"]["vocab"]["tokens"] = doc["meta"]["vocab"]["tokens"][:-5]
    doc["meta"]["model_config"]["input_size"] -= 5
    doc["meta"]["model_config"]["output_size"] -= 5


CHECKPOINT_FAULTS = {
    "run directory missing": (lambda run, ck: shutil.rmtree(run), "no checkpoint at"),
    "pointers missing": (lambda run, ck: [(run / n).unlink() for n in ("best.json", "last.json")], "no checkpoint at"),
    "pointer garbage": (lambda run, ck: (run / "best.json").write_text("{{{"), "not a valid checkpoint pointer"),
    "pointer outside the run": (lambda run, ck: (run / "best.json").write_text('{"checkpoint": "../../etc"}'),
                                "outside its run directory"),
    "weights missing": (lambda run, ck: (ck / "model.safetensors").unlink(), "model.safetensors is missing"),
    "weights truncated": (lambda run, ck: _truncate(ck, "model.safetensors"), "sha256 mismatch"),
    "weights truncated, hash updated": (lambda run, ck: (_truncate(ck, "model.safetensors"), rehash(ck)),
                                        "not a valid safetensors file"),
    "meta.json truncated": (lambda run, ck: _truncate(ck, "meta.json"), "meta.json is not valid JSON"),
    "a flipped byte": (lambda run, ck: _flip(ck), "sha256 mismatch"),
    "random bytes, hash updated": (lambda run, ck: (rewrite_file(ck / "model.safetensors", os.urandom(4000)),
                                                    rehash(ck)), "not a valid safetensors file"),
    "tampered header dtype": (lambda run, ck: _tamper_header(ck), "not a valid safetensors file"),
    "tampered tensor shape": (lambda run, ck: _edit_weights(ck, lambda w: w.update({"embedding.weight": np.zeros(
        (3, 3), np.float32)})), "weight 'embedding.weight' has shape (3, 3)"),
    "a tensor missing": (lambda run, ck: _edit_weights(ck, lambda w: w.pop("head.b")), "missing ['head.b']"),
    "NaN weights": (lambda run, ck: _edit_weights(ck, lambda w: w["head.b"].fill(np.nan)), "contains NaN or Inf"),
    "integer weights": (lambda run, ck: _edit_weights(ck, lambda w: w.update({"head.b": w["head.b"].astype(
        np.int32)})), "has dtype int32"),
    "written by another library": (lambda run, ck: edit_meta(ck, lambda d: d.update(library="torch")),
                                   "written by another library ('torch')"),
    "another program's directory": (lambda run, ck: (shutil.rmtree(run), run.mkdir(), st_numpy.save_file(
        {"w": np.zeros(3, np.float32)}, str(run / "model.safetensors"))), "no checkpoint at"),
    "newer format version": (lambda run, ck: edit_meta(ck, lambda d: d.update(format_version=2)),
                             "written by a newer mlxrnn (format 2); upgrade mlxrnn"),
    "vocabulary shorter than the weights": (lambda run, ck: edit_meta(ck, lambda d: d["meta"]["vocab"].update(
        tokens=d["meta"]["vocab"]["tokens"][:-5])), "vocabulary has"),
    "vocabulary and config shrunk together": (lambda run, ck: edit_meta(ck, _shrink_vocab),
                                              "the model expects ("),
    "vocabulary duplicated token": (lambda run, ck: edit_meta(ck, lambda d: d["meta"]["vocab"]["tokens"].__setitem__(
        5, d["meta"]["vocab"]["tokens"][6])), "appears more than once"),
    "vocabulary level differs from the tokenizer": (lambda run, ck: edit_meta(
        ck, lambda d: d["meta"]["tokenizer"].update(level="word")), "the tokenizer is word-level"),
    "config: unknown cell option": (lambda run, ck: edit_meta(ck, lambda d: _recurrent(d).update(
        cell_options={"bogus": 1})), "unknown option(s) bogus"),
    "config: unknown cell": (lambda run, ck: edit_meta(ck, lambda d: _recurrent(d).update(
        cell="transformer")), "unknown cell 'transformer'"),
    "config: hidden_size 10**12": (lambda run, ck: edit_meta(ck, lambda d: _recurrent(d).update(
        hidden_size=10**12)), "checkpoint metadata is invalid"),
    "config: hidden_size 4096": (lambda run, ck: edit_meta(ck, lambda d: _recurrent(d).update(
        hidden_size=4096)), "checkpoint stores"),
    "config: a recurrent setting given twice": (lambda run, ck: edit_meta(
        ck, lambda d: d["meta"]["model_config"].update(hidden_size=16)), "both at the top level and under 'recurrent'"),
    "config: recurrent settings not a dict": (lambda run, ck: edit_meta(
        ck, lambda d: d["meta"]["model_config"].update(recurrent=None)), "recurrent must be a dict"),
    "config: not a language model head": (lambda run, ck: edit_meta(ck, lambda d: d["meta"]["model_config"].update(
        output="last")), "output='last'"),
    "config: negative seed": (lambda run, ck: edit_meta(ck, lambda d: d["meta"]["model_config"].update(seed=-3)),
                              "seed must be an integer >= 0"),
    "kind: a classifier": (lambda run, ck: edit_meta(ck, lambda d: d["meta"].update(kind="classifier")),
                           "not a language model"),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_bad_checkpoints_through_sample_score_and_eval(tmp_path, char_run, corpus, fault):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    damage, message = CHECKPOINT_FAULTS[fault]
    damage(run, checkpoint_dir(run))
    before = tree_digest(run, corpus)
    for args in (["sample", run, "--length", "5"], ["score", run, "hello"], ["eval", run, corpus]):
        assert_clean(invoke(*args, "--backend", "numpy"), 1, message)
    assert tree_digest(run, corpus) == before  # loading never writes


