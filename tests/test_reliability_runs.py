"""Reliability, round two (issue 17): runs that cannot be lost.

* ``force`` builds the new run beside the old one and swaps only after its first checkpoint: every
  failure before that (real EFBIG from a file-size limit at each kind of write, a real ENOSPC on a
  tiny tmpfs where one can be mounted, a read-only directory, divergence, Ctrl-C, a kill between
  the two renames of the fallback swap) leaves the old run byte for byte (item 1);
* a run directory is locked while a process trains in it, and the OS drops the lock when that
  process dies (item 5);
* a resumed run repairs a metrics log cut mid-line and does not log the steps it does again (item 8).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlxrnn.errors import CheckpointError, DataError, TrainingDiverged, WriteError
from mlxrnn.io import files, run_directory
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import LanguageModelRun, TrainOptions, train_language_model
from tests.reliability_support import TINY, TINY_FLAGS, assert_clean_process, char_run, corpus, run_process, tree_digest

__all__ = ["char_run", "corpus"]  # module fixtures shared with test_reliability


def _options(corpus_path, **changes) -> TrainOptions:
    return TrainOptions(corpus=str(corpus_path), backend="numpy", **{**TINY, "steps": 4, **changes})


@contextmanager
def file_size_limit(limit: int):
    """A real RLIMIT_FSIZE for this process: writes past ``limit`` bytes fail with EFBIG (Python
    ignores SIGXFSZ), the same failure as ``ulimit -f`` or a nearly full disk at one file."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}."))


@pytest.fixture
def old_run(tmp_path, char_run) -> Path:
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    return run


def _step(run: Path) -> int:
    return load_checkpoint(run, tag="last").meta["training"]["state"]["step"]


# --------------------------------------------------------------------------------------------
# item 1: --force never destroys the old run before the new one has a checkpoint


def _diverging(corpus_path):
    return _options(corpus_path, steps=40, lr=50.0, clip=None, optimizer="sgd", eval_every=1000)


FORCE_FAILURES = {  # how the replacement fails, the error it raises, what the message says
    "a checkpoint larger than the file-size limit": (
        lambda c: _options(c, hidden=32), 20_000, CheckpointError, "file-size limit"),
    "options.json larger than the file-size limit": (lambda c: _options(c), 300, WriteError, "options.json"),
    "the metrics log passes the file-size limit": (
        lambda c: _options(c, steps=60, eval_every=1000), 6_000, WriteError, "metrics.jsonl"),
    "divergence before the first checkpoint": (_diverging, None, TrainingDiverged, "is unchanged"),
}


@pytest.mark.parametrize("failure", list(FORCE_FAILURES))
def test_a_forced_run_that_fails_before_its_first_checkpoint_keeps_the_old_run(old_run, corpus, failure):
    make, limit, error, message = FORCE_FAILURES[failure]
    before = tree_digest(old_run)
    with pytest.raises(error, match=message):
        with file_size_limit(limit) if limit else _nothing():
            train_language_model(make(corpus), old_run, force=True)
    assert tree_digest(old_run) == before
    assert _siblings(old_run) == []  # the half-built replacement is gone too


@contextmanager
def _nothing():
    yield


def test_ctrl_c_twice_during_a_forced_run_keeps_the_old_run(old_run, corpus):
    before = tree_digest(old_run)

    def second_ctrl_c(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_language_model(_options(corpus, eval_every=1000), old_run, force=True, progress=second_ctrl_c)
    assert tree_digest(old_run) == before and _siblings(old_run) == []


def test_a_forced_run_replaces_the_old_one_once_it_has_a_checkpoint(old_run, corpus, monkeypatch):
    """The swap itself, atomic (renameat2) and by two renames where the system cannot exchange."""
    old_checkpoints = {p.name for p in (old_run / "checkpoints").iterdir()}
    seen = []

    def look_at_the_directory(progress):  # before the first checkpoint: still the old run in place
        seen.append((progress.step, _step(old_run)))

    train_language_model(_options(corpus, steps=4, eval_every=2), old_run, force=True, progress=look_at_the_directory)
    assert seen[0] == (1, 6)  # step 1 of the new run: the directory still held the old run (step 6)
    assert _step(old_run) == 4 and _siblings(old_run) == []
    assert not old_checkpoints & {p.name for p in (old_run / "checkpoints").iterdir()}
    records = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "start"] == [0]  # only the new run's log
    monkeypatch.setattr(run_directory, "exchange_paths", lambda a, b: False)
    train_language_model(_options(corpus, steps=3), old_run, force=True)
    assert _step(old_run) == 3 and _siblings(old_run) == []


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_start(old_run, corpus):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    before = tree_digest(old_run)
    aside = old_run.parent / f".run.replaced-{dead.pid}-0123abcd"
    half_built = old_run.parent / f".run.replacing-{dead.pid}-4567cdef"
    half_built.mkdir()
    (half_built / "options.json").write_text("{}")
    os.rename(old_run, aside)  # the first rename of the fallback swap, and then the process died
    with pytest.raises(DataError, match="no such file"):  # a failed start still puts the old run back
        train_language_model(_options(corpus.parent / "missing.txt"), old_run, force=True)
    assert tree_digest(old_run) == before and _siblings(old_run) == []
    os.rename(old_run, aside)
    train_language_model(TrainOptions(steps=7, backend="numpy"), old_run, resume=True)  # resume repairs it too
    assert _step(old_run) == 7


@contextmanager
def read_only(path: Path):
    """``path`` read-only: by its mode for an ordinary user, by a read-only bind mount for root
    (who ignores modes), or the test is skipped."""
    os.chmod(path, 0o555)
    mounted = False
    try:
        if os.access(path, os.W_OK):
            binds = [["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]]
            if not shutil.which("mount") or any(subprocess.run(b, capture_output=True).returncode for b in binds):
                pytest.skip("cannot make a directory read-only for this user")
            mounted = True
        yield
    finally:
        if mounted or os.path.ismount(path):
            subprocess.run(["umount", str(path)], check=False)
        os.chmod(path, 0o755)


def test_a_read_only_run_directory_is_refused_before_training(old_run, corpus):
    before = tree_digest(old_run)
    with read_only(old_run):
        with pytest.raises(WriteError, match="is not writable"):
            train_language_model(_options(corpus), old_run, force=True)
        with pytest.raises((WriteError, CheckpointError), match=r"cannot write the metrics log .*metrics.jsonl: ") as e:
            train_language_model(TrainOptions(steps=8, backend="numpy"), old_run, resume=True)
        assert "\n" not in str(e.value)
    assert tree_digest(old_run) == before and _siblings(old_run) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KB tmpfs (root on Linux only): a real full disk."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                          capture_output=True) if shutil.which("mount") else None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_during_a_forced_run_keeps_the_old_run(tiny_tmpfs, char_run, corpus):
    run = tiny_tmpfs / "run"
    shutil.copytree(char_run, run)
    before = tree_digest(run)
    with pytest.raises((CheckpointError, WriteError), match="disk is full"):
        train_language_model(_options(corpus, hidden=64, eval_every=2), run, force=True)
    assert tree_digest(run) == before and _siblings(run) == []


def test_writes_fail_in_one_line_and_keep_the_previous_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous")
    with file_size_limit(100), pytest.raises(WriteError, match=r"report.json: the file would exceed the file-size"):
        files.write_file_atomically(target, "x" * 1000)
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["report.json"]
    with pytest.raises(WriteError, match="the directory does not exist"):
        files.write_file_atomically(tmp_path / "absent" / "x.json", "{}")
    with pytest.raises(WriteError, match="it is a directory"):
        files.append_line(tmp_path, "{}")
    with pytest.raises(WriteError, match="it is a directory"):
        files.check_writable(tmp_path)
    with pytest.raises(WriteError, match="the directory does not exist"):
        files.check_writable(tmp_path / "absent" / "x.json")
    files.check_writable(tmp_path / "new.json")
    assert sorted(os.listdir(tmp_path)) == ["report.json"]  # the check leaves nothing behind


def test_a_file_size_limit_fails_the_cli_in_one_line_without_a_0_byte_file(tmp_path, corpus):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); "
         "from mlxrnn_cli.main import cli; sys.argv = ['mlxrnn'] + sys.argv[1:]; cli()",
         "train", str(corpus), *TINY_FLAGS, "--out", str(run)], capture_output=True, text=True, timeout=120)
    assert_clean_process(proc, 1, "options.json", "file-size limit")
    assert not (run / "options.json").exists() and not run.exists()  # nothing half-written is left


# --------------------------------------------------------------------------------------------
# item 5: one training process per run directory


def test_a_second_process_on_a_run_directory_is_refused(old_run, corpus):
    first = LanguageModelRun(TrainOptions(steps=8, backend="numpy"), old_run, resume=True)
    before = tree_digest(old_run)
    for attempt in (lambda: LanguageModelRun(TrainOptions(steps=9, backend="numpy"), old_run, resume=True),
                    lambda: LanguageModelRun(_options(corpus), old_run, force=True)):
        with pytest.raises(DataError, match="in use by another mlxrnn process"):
            attempt()
    assert tree_digest(old_run) == before
    first.train()
    first.close()
    assert _step(old_run) == 8
    train_language_model(TrainOptions(steps=9, backend="numpy"), old_run, resume=True)  # released
    assert _step(old_run) == 9


def test_the_lock_dies_with_the_process(old_run, corpus):
    holder = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "train", "--resume", "--out", str(old_run), "--steps",
         "100000000", "--quiet", "--sample-length", "0", "--backend", "numpy"], stderr=subprocess.PIPE, text=True)
    try:
        metrics = old_run / "metrics.jsonl"
        size = metrics.stat().st_size
        deadline = time.time() + 60
        while metrics.stat().st_size == size:  # its first records: it holds the lock and trains
            assert holder.poll() is None and time.time() < deadline, holder.stderr.read()
            time.sleep(0.05)
        second = run_process("train", "--resume", "--out", old_run, "--steps", "7", "--quiet", "--sample-length",
                             "0", "--backend", "numpy")
        assert_clean_process(second, 1, "in use by another mlxrnn process")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # a budget past its last checkpoint (a finished run resumed as it was refuses to train nothing)
    step = load_checkpoint(old_run, tag="last").meta["training"]["state"]["step"]
    after = run_process("train", "--resume", "--out", old_run, "--steps", str(step + 1), "--quiet",
                        "--sample-length", "0", "--backend", "numpy")
    assert after.returncode == 0, after.stderr


# --------------------------------------------------------------------------------------------
# item 8: the metrics log after a kill


def test_a_resumed_run_repairs_a_cut_log_and_logs_no_step_twice(tmp_path, corpus):
    options = _options(corpus, steps=8, eval_every=3, log_every=1)
    train_language_model(options, tmp_path / "whole")

    def killed_at_step_5(progress):
        if progress.step == 5 and progress.event == "train":
            raise SystemExit("kill -9")  # steps 4 and 5 are logged, the last checkpoint is step 3

    with pytest.raises(SystemExit):
        train_language_model(options, tmp_path / "split", progress=killed_at_step_5)
    with open(tmp_path / "split" / "metrics.jsonl", "a") as log:
        log.write('{"event": "train", "st')  # and the kill came in the middle of a record
    train_language_model(options, tmp_path / "split", resume=True)

    def steps(run):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # every line parses
        return [(r["event"], r["step"]) for r in records if r["event"] in ("train", "eval")]

    assert steps(tmp_path / "split") == steps(tmp_path / "whole")


def test_trimming_keeps_what_it_cannot_read(tmp_path):
    directory = run_directory.RunDirectory(tmp_path)
    lines = ['{"event": "train", "step": 2}', "a line someone wrote", '{"event": "train", "step": 3}',
             '{"event": "end", "steps": 9}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    directory.trim_metrics(2)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [lines[0], lines[1], lines[3]]
