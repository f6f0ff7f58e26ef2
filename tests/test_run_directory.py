"""The run directory (mlxrnn/io/run_directory.py), one piece at a time: what counts as a run's
entry (and so may be replaced with ``force``), the tidying of a killed replacement's siblings,
trimming the metrics log for a resume, and the directory a failed new run leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.run_directory import RunDirectory, _after, _pid_alive, is_run_entry
from mlxrnn.run.loop import TrainOptions, train_language_model


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_run_entries_are_recognised_by_name_and_content(tmp_path):
    def entry(name, text=None, directory=False):
        path = tmp_path / name
        if directory:
            path.mkdir()
        elif text is not None:
            path.write_text(text)
        return is_run_entry(path)

    assert entry("options.json", json.dumps({"options": {}}))
    assert entry("last.json", json.dumps({"checkpoint": "checkpoints/step-00000001"}))
    assert entry("metrics.jsonl", json.dumps({"event": "start"}) + "\n{not json")
    assert entry("best.json", "")  # empty: killed while writing it
    assert not entry("notes.json", json.dumps({"options": {}}))  # not a run's name
    assert not entry("options.json.bak", json.dumps({"options": {}}))
    (tmp_path / "options.json").unlink()
    assert not entry("options.json", json.dumps({"checkpoint": "x"}))  # the key of another file
    (tmp_path / "options.json").unlink()
    assert not entry("options.json", "\xff not json")
    (tmp_path / "options.json").unlink()
    assert not entry("options.json", directory=True)
    assert not entry("metrics.jsonl", "[1, 2]\n")
    assert entry(f".tmp-last.json-{os.getpid()}-0123abcd", "{")
    assert entry(f".tmp-metrics.jsonl-{os.getpid()}-0123abcd", "")
    assert not entry(f".tmp-thesis.txt-{os.getpid()}-0123abcd", "")
    assert not entry(f".tmp-best.json-{os.getpid()}-0123abcd", directory=True)


def test_the_checkpoints_directory_is_a_runs_only_when_it_holds_only_steps(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    assert is_run_entry(checkpoints)  # empty
    (checkpoints / "step-00000004").mkdir()
    (checkpoints / f".tmp-step-00000005-{os.getpid()}-0123abcd").mkdir()
    assert is_run_entry(checkpoints)
    (checkpoints / "thesis.tex").write_text("mine")
    assert not is_run_entry(checkpoints)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").mkdir()
    os.symlink(elsewhere, tmp_path / "link" / "checkpoints")
    assert not is_run_entry(tmp_path / "link" / "checkpoints")  # a symlink is never a run's
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "checkpoints").write_text("")
    assert not is_run_entry(tmp_path / "file" / "checkpoints")
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"options": {}}))
    os.symlink(target, tmp_path / "file" / "options.json")
    assert not is_run_entry(tmp_path / "file" / "options.json")
    os.mkfifo(tmp_path / "file" / "best.json")
    assert not is_run_entry(tmp_path / "file" / "best.json")  # never opened (it would block)


def test_a_pid_is_alive_unless_it_is_ours_or_gone():
    assert not _pid_alive(os.getpid())
    assert _pid_alive(os.getppid())
    assert not _pid_alive(_dead_pid())


def test_a_killed_replacements_siblings_are_tidied_and_live_ones_kept(tmp_path):
    run = tmp_path / "run"
    dead, live = _dead_pid(), os.getppid()
    leftovers = {name: tmp_path / name for name in (f".run.replacing-{dead}-0123abcd", f".run.replacing-{live}-0123abcd",
                                                     f".other.replacing-{dead}-0123abcd", ".run.replacing-x-0123abcd")}
    for path in leftovers.values():
        path.mkdir()
    moved_aside = tmp_path / f".run.replaced-{dead}-89abcdef"
    moved_aside.mkdir()
    (moved_aside / "options.json").write_text(json.dumps({"options": {"old": True}}))
    directory = RunDirectory(run)
    with pytest.raises(DataError, match="has no checkpoint"):
        directory.check_resumable()  # tidies first: the old run is back in place
    assert json.loads((run / "options.json").read_text()) == {"options": {"old": True}}
    assert not moved_aside.exists()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == sorted([f".other.replacing-{dead}-0123abcd", f".run.replacing-{live}-0123abcd",
                            ".run.replacing-x-0123abcd", "run"])
    # a "replaced" sibling beside an existing run is a leftover: removed, the run kept
    stale = tmp_path / f".run.replaced-{dead}-00000000"
    stale.mkdir()
    assert RunDirectory(run).claim(force=True) == ("options.json",)
    assert not stale.exists() and (run / "options.json").exists()


def test_check_resumable_and_claim_refuse_a_file_and_a_foreign_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    for action in (lambda d: d.check_resumable(), lambda d: d.claim(True)):
        with pytest.raises(ConfigError, match="is a file, not a directory"):
            action(RunDirectory(tmp_path / "file"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        RunDirectory(tmp_path / "mine").claim(False)
    with pytest.raises(ConfigError, match=r"holds files that are not an mlxrnn run's \(thesis.tex\)"):
        RunDirectory(tmp_path / "mine").claim(True)
    with pytest.raises(ConfigError, match="is empty"):
        RunDirectory("")


def test_a_failed_new_run_leaves_an_empty_directory_it_did_not_create(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(DataError):
        train_language_model(TrainOptions(corpus=str(tmp_path / "missing.txt"), steps=1, backend="numpy"), mine)
    assert mine.is_dir() and list(mine.iterdir()) == []
    new = RunDirectory(tmp_path / "new")
    new.claim(False)
    new.start(())
    new.abandon()  # a directory this run created, still empty: removed
    new.release()
    assert not (tmp_path / "new").exists()
    kept = RunDirectory(tmp_path / "kept")
    kept.claim(False)
    kept.start(())
    kept.append_metrics({"event": "start"})
    kept.abandon()  # it holds something now: kept
    kept.release()
    assert (tmp_path / "kept" / "metrics.jsonl").exists()


def _log(path, records, tail=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_trimming_keeps_the_checkpoints_step_and_rewrites_only_when_needed(tmp_path):
    directory = RunDirectory(tmp_path)
    log = tmp_path / "metrics.jsonl"
    records = [{"event": "start", "step": 0}, {"event": "train", "step": 4}, {"event": "eval", "step": 4},
               {"event": "train", "step": 5}, {"event": "end", "step": 6}]
    _log(log, records)
    inode = os.stat(log).st_ino
    directory.trim_metrics(6)
    assert os.stat(log).st_ino == inode  # nothing to drop: not rewritten
    directory.trim_metrics(4)
    assert [json.loads(line) for line in log.read_text().splitlines()] == records[:3]
    _log(log, records[:3], tail=b'{"event": "tr')
    inode = os.stat(log).st_ino
    directory.trim_metrics(4)  # only a partial last line to drop
    assert log.read_bytes().endswith(b'"step": 4}\n') and os.stat(log).st_ino != inode
    directory.trim_metrics(0)
    assert [json.loads(line) for line in log.read_text().splitlines()] == records[:1]
    RunDirectory(tmp_path / "none").trim_metrics(3)  # no log: nothing to do


def test_which_records_are_after_a_step():
    assert _after(b'{"step": 5}', 4) and not _after(b'{"step": 4}', 4) and not _after(b'{"step": 3}', 4)
    assert not _after(b'{"step": true}', 0) and not _after(b'{"step": 5.0}', 4) and not _after(b'{"step": "9"}', 4)
    assert not _after(b"not json", 0) and not _after(b"[9]", 0) and not _after(b"{}", 0)
