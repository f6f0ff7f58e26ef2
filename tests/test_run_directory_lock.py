"""The run directory's lock across a forced replacement (issue 29, item 6).

A ``force`` run is built in a hidden sibling, locked there, and swapped into place at its first
checkpoint; from then on the lock it holds must be the one on the directory now at the run's
path, so a second process is still refused. (``flock`` conflicts between two open descriptions
even in one process, so a second :class:`RunLock` here is what a second process would meet.)
"""

from __future__ import annotations

import json
import os

from mlxrnn.errors import DataError
from mlxrnn.io.run_directory import RunDirectory
from mlxrnn.io.run_lock import RunLock
from mlxrnn.run.loop import TrainOptions, train_language_model
from mlxrnn.text.corpus import bundled_corpus_path

TINY = dict(layers=1, hidden=6, embed=4, seq_len=8, batch_size=2, log_every=1, dropout=0.0, backend="numpy")


def _is_locked(path) -> bool:
    try:
        RunLock(path).release()
    except DataError as error:
        assert "is in use by another mlxrnn process" in str(error)
        return True
    return False


def _old_run(path):
    path.mkdir()
    (path / "options.json").write_text(json.dumps({"options": {"old": True}}))
    (path / "metrics.jsonl").write_text(json.dumps({"event": "start"}) + "\n")


def test_a_forced_run_directory_stays_locked_through_the_swap(tmp_path):
    run = tmp_path / "run"
    _old_run(run)
    directory = RunDirectory(run)
    replaced = directory.claim(force=True)
    assert replaced == ("metrics.jsonl", "options.json") and _is_locked(run)
    directory.start(replaced)
    sibling = directory.writing
    assert sibling != run and directory.replacing and _is_locked(run) and _is_locked(sibling)
    directory.write_json("options.json", {"options": {"new": True}})
    directory.commit()
    assert not directory.replacing and directory.writing == run
    assert json.loads((run / "options.json").read_text()) == {"options": {"new": True}}
    assert not os.path.exists(sibling)
    assert _is_locked(run)  # the new run at the path is held, not just the old one that was deleted
    directory.commit()  # nothing pending: a no-op that keeps the lock
    assert _is_locked(run)
    directory.release()
    assert not _is_locked(run)


def test_a_plain_new_run_directory_is_locked_until_released(tmp_path):
    directory = RunDirectory(tmp_path / "fresh")
    assert directory.claim(force=False) == ()
    directory.start(())
    assert _is_locked(tmp_path / "fresh")
    directory.commit()
    assert _is_locked(tmp_path / "fresh")
    directory.release()
    assert not _is_locked(tmp_path / "fresh")


def test_a_forced_training_run_is_locked_after_its_first_checkpoint(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:1500], encoding="utf-8")
    run = tmp_path / "run"
    options = TrainOptions(corpus=str(corpus), steps=2, eval_every=1, **TINY)
    train_language_model(options, run)
    seen = []

    def progress(p):
        if p.event == "eval":  # after evaluating, saving, and so swapping the new run in
            seen.append((p.step, (run / "last.json").exists(), _is_locked(run)))

    train_language_model(options, run, force=True, progress=progress)
    assert seen == [(1, True, True), (2, True, True)]
    assert not _is_locked(run)  # released when the run ends
    train_language_model(TrainOptions(steps=3, backend="numpy"), run, resume=True)  # and so resumable
