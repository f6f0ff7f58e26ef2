"""Crash safety: SIGKILL during a save, at every file-system step, never corrupts the latest checkpoint."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.io.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_run_checkpoint,
)
from tests.checkpoint_support import ROOT, pointer, step_dirs

# ------------------------------------------------------------------------------------------
# crash safety

CRASH_WRITER = r"""
import sys
import numpy as np
from mlxrnn.io.checkpoint import save_run_checkpoint

run, step = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:
    step += 1
    weights = {"a": np.full((512, 512), step, np.float32), "b": np.full((256, 512), step, np.float64)}
    optimizer = {"m": np.full((512, 512), step, np.float32), "t": np.full((1,), step, np.int64)}
    tags = ("last", "best") if step % 3 == 0 else ("last",)
    save_run_checkpoint(run, step, weights, {"step": step}, optimizer, tags=tags)
"""


def assert_consistent(loaded: Checkpoint) -> int:
    step = loaded.meta["step"]
    assert loaded.path.name.startswith(f"step-{step:08d}")
    assert sorted(loaded.weights) == ["a", "b"] and sorted(loaded.optimizer_tensors) == ["m", "t"]
    assert loaded.weights["a"].shape == (512, 512) and loaded.weights["b"].shape == (256, 512)
    for arr in [*loaded.weights.values(), *loaded.optimizer_tensors.values()]:
        assert (arr == step).all()
    return step


def crash_save(run: Path, step: int, tags=("last",)) -> Path:
    weights = {"a": np.full((512, 512), step, np.float32), "b": np.full((256, 512), step, np.float64)}
    optimizer = {"m": np.full((512, 512), step, np.float32), "t": np.full((1,), step, np.int64)}
    return save_run_checkpoint(run, step, weights, {"step": step}, optimizer, tags=tags)


@pytest.mark.skipif(os.name == "nt", reason="needs POSIX SIGKILL and pid liveness checks")
def test_sigkill_during_saves_never_corrupts_the_latest_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    crash_save(run, 0, tags=("last", "best"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    rng = random.Random(20240611)
    last_step = 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(run), str(last_step)],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.05, 0.35))
            assert proc.poll() is None, "the writer died on its own"
        finally:
            proc.kill()  # SIGKILL: no cleanup handlers run
            proc.wait()
            proc.stdout.close()
        step = assert_consistent(load_checkpoint(run))
        assert step >= last_step
        best = assert_consistent(load_checkpoint(run, "best"))
        assert best % 3 == 0 and best <= step
        for path in list_checkpoints(run):  # every published directory is complete
            assert_consistent(load_checkpoint(path))
        last_step = step  # resume from the last good checkpoint, like a restarted trainer
    assert last_step > 8, "the writer never got to save: the test exercised nothing"

    final = crash_save(run, last_step + 1)
    referenced = {pointer(run, "last").split("/")[1], pointer(run, "best").split("/")[1]}
    assert final.name in referenced
    assert set(step_dirs(run)) == referenced  # orphans and stale .tmp-* dirs are gone
    assert sorted(os.listdir(run)) == ["best.json", "checkpoints", "last.json"]


def small_save(run: Path, step: int, tags) -> Path:
    weights = {"a": np.full((64, 64), step, np.float32), "b": np.full((8,), step, np.float64)}
    optimizer = {"m": np.full((64, 64), step, np.float32), "t": np.full((1,), step, np.int64)}
    return save_run_checkpoint(run, step, weights, {"step": step}, optimizer, tags=tags)


def small_step(loaded: Checkpoint) -> int:
    step = loaded.meta["step"]
    assert loaded.path.name.startswith(f"step-{step:08d}")
    assert sorted(loaded.weights) == ["a", "b"] and sorted(loaded.optimizer_tensors) == ["m", "t"]
    for arr in [*loaded.weights.values(), *loaded.optimizer_tensors.values()]:
        assert (arr == step).all()
    return step


def _die_at_event(number: int, run: Path) -> None:
    """In a forked child: SIGKILL ourselves right before the ``number``-th file-system call."""
    import signal

    counter = iter(range(1, 1_000_000))

    def hooked(fn):
        def wrapper(*args, **kwargs):
            if next(counter) == number:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)

        return wrapper

    for module, name in [
        (os, "mkdir"),
        (os, "fsync"),
        (os, "rename"),
        (os, "replace"),
        (os, "unlink"),
        (os, "rmdir"),
        (shutil, "rmtree"),
    ]:
        setattr(module, name, hooked(getattr(module, name)))
    small_save(run, 2, ("last",))
    small_save(run, 3, ("last", "best"))  # publishes step 3, then prunes steps 1 and 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_every_file_system_step_is_recoverable(tmp_path: Path) -> None:
    """Deterministic complement to the random-kill test: die before each I/O call in turn."""
    pristine = tmp_path / "pristine"
    small_save(pristine, 1, ("last", "best"))
    seen_last = []
    for number in range(1, 200):
        run = tmp_path / f"run-{number}"
        shutil.copytree(pristine, run)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                _die_at_event(number, run)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        last = small_step(load_checkpoint(run))
        best = small_step(load_checkpoint(run, "best"))
        for path in list_checkpoints(run):
            small_step(load_checkpoint(path))
        assert best in (1, 3) and best <= last
        seen_last.append(last)
        small_save(run, 4, ("last",))  # the next save cleans up whatever the crash left
        assert set(step_dirs(run)) == {pointer(run, "last")[12:], pointer(run, "best")[12:]}
        assert sorted(os.listdir(run)) == ["best.json", "checkpoints", "last.json"]
        shutil.rmtree(run)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, "the child failed without being killed"
            break
        assert os.WTERMSIG(status) == 9
    else:
        pytest.fail("the child never finished: more file-system calls than expected")
    assert seen_last == sorted(seen_last), "'last' went backwards at some crash point"
    assert set(seen_last) == {1, 2, 3} and number > 20
