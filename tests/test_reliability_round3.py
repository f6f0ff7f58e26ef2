"""Reliability, round three (issue 28): --force and Ctrl-C, stop decisions, standard input, sampling.

* Ctrl-C during a forced run that has no checkpoint yet keeps the old run and saves the new one
  beside it, resumable, saying where (item 1);
* ``--force`` from inside the run directory (``--out .``) trains to the end (item 2);
* ``score -f -`` with standard input closed is one line (item 7), and honours ``--encoding`` (item 14);
* Ctrl-C while the CLI still imports exits 130 with one line (item 8);
* a run that stopped (``--patience``, or stalled at ``--min-lr`` with ``--at-min-lr stop``) stays
  stopped when resumed as it was, says why and which flag continues it (item 10);
* `valid`/`test` file names that are not UTF-8 are refused before anything is written (item 13);
* ``--top-p`` tiny on MLX keeps the most likely allowed token, never <PAD> (item 15).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

from mlxrnn.errors import DataError, Interrupted
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import TrainOptions, train_language_model
from tests.reliability_support import TINY, TINY_FLAGS, char_run, corpus, tree_digest

__all__ = ["char_run", "corpus"]  # module fixtures shared with test_reliability

MODULE = [sys.executable, "-m", "mlxrnn_cli.main"]


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mlxrnn", **kwargs)


def _options(corpus_path, **changes) -> TrainOptions:
    return TrainOptions(corpus=str(corpus_path), backend="numpy", **{**TINY, "steps": 4, **changes})


def _step(run: Path, tag: str = "last") -> int:
    return load_checkpoint(run, tag=tag).meta["training"]["state"]["step"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # see test_reliability._default_sigint


@pytest.fixture
def old_run(tmp_path, char_run) -> Path:
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    return run


def _hidden_siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}."))


# --------------------------------------------------------------------------------------------
# item 1: Ctrl-C during --force before the first checkpoint


def _ctrl_c_at(step: int):
    def progress(p):
        if p.step == step and p.event == "train":
            os.kill(os.getpid(), signal.SIGINT)
    return progress


def test_ctrl_c_during_a_forced_run_keeps_the_old_run_and_sets_the_new_one_aside(old_run, corpus):
    before = tree_digest(old_run)
    with pytest.raises(Interrupted) as stop:
        train_language_model(_options(corpus, steps=50, eval_every=1000), old_run, force=True,
                             progress=_ctrl_c_at(2))
    assert tree_digest(old_run) == before  # the old run, byte for byte
    aside = old_run.parent / "run.new"
    message = str(stop.value)
    assert str(aside) in message and "unchanged" in message and f"--resume --out {aside}" in message
    assert _step(aside) == 2 and _hidden_siblings(old_run) == []
    events = [json.loads(line)["event"] for line in (aside / "metrics.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "interrupted"
    summary = train_language_model(_options(corpus, steps=5), aside, resume=True)  # resumable
    assert summary.steps == 5 and _step(aside) == 5
    assert tree_digest(old_run) == before


def test_a_second_interrupted_forced_run_is_set_aside_under_another_name(old_run, corpus):
    (old_run.parent / "run.new").mkdir()
    (old_run.parent / "run.new" / "mine.txt").write_text("keep")
    with pytest.raises(Interrupted, match="run.new-2"):
        train_language_model(_options(corpus, steps=50, eval_every=1000), old_run, force=True,
                             progress=_ctrl_c_at(1))
    assert (old_run.parent / "run.new" / "mine.txt").read_text() == "keep"
    assert _step(old_run.parent / "run.new-2") == 1 and _step(old_run) == 6


def test_ctrl_c_after_the_forced_run_has_a_checkpoint_keeps_the_new_run_in_place(old_run, corpus):
    with pytest.raises(Interrupted):
        train_language_model(_options(corpus, steps=50, eval_every=2), old_run, force=True, progress=_ctrl_c_at(3))
    assert _step(old_run) == 3 and not (old_run.parent / "run.new").exists() and _hidden_siblings(old_run) == []


def test_ctrl_c_during_a_forced_cli_run_says_where_the_new_run_is(old_run, corpus):
    process = subprocess.Popen([*MODULE, "train", str(corpus), *TINY_FLAGS, "--steps", "100000000", "--eval-every",
                                "100000000", "--out", str(old_run), "--force"], stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)
    before = tree_digest(old_run)
    deadline = time.time() + 120
    while not list(old_run.parent.glob(".run.replacing-*/metrics.jsonl")):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert tree_digest(old_run) == before
    assert f"mlxrnn train --resume --out {old_run.parent / 'run.new'}" in stderr.strip().splitlines()[-1]
    assert _step(old_run.parent / "run.new") >= 1


# --------------------------------------------------------------------------------------------
# item 2: --force from inside the run directory


def test_force_from_inside_the_run_directory(old_run, corpus):
    proc = subprocess.run([*MODULE, "train", str(corpus), *TINY_FLAGS, "--steps", "4", "--eval-every", "2",
                           "--out", ".", "--force"], cwd=old_run, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert _step(old_run) == 4 and _hidden_siblings(old_run) == []
    records = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "end" and records[-1]["steps"] == 4


def test_force_from_a_subdirectory_of_the_run(old_run, corpus):
    inside = old_run / "checkpoints"
    proc = subprocess.run([*MODULE, "train", str(corpus), *TINY_FLAGS, "--steps", "3", "--out", "..", "--force"],
                          cwd=inside, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert _step(old_run) == 3


# --------------------------------------------------------------------------------------------
# items 7 and 14: standard input


def test_score_with_standard_input_closed_is_one_line(char_run):
    proc = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *MODULE, "score", str(char_run), "-f", "-", "--backend",
                           "numpy"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "standard input" in lines[0], proc.stderr


def test_score_reads_standard_input_in_the_given_encoding(char_run):
    result = invoke("score", char_run, "-f", "-", "--encoding", "latin-1", "--json", "--backend", "numpy",
                    input="caf\xe9 au lait\n".encode("latin-1"))
    assert result.exit_code == 0, result.output
    assert [s["text"] for s in json.loads(result.stdout)] == ["café au lait"]
    bad = invoke("score", char_run, "-f", "-", "--backend", "numpy", input=b"caf\xe9\n")  # not UTF-8
    assert bad.exit_code == 1 and "standard input" in bad.stderr and "latin-1" in bad.stderr, bad.output
    assert "Traceback" not in bad.output
    replaced = invoke("score", char_run, "-f", "-", "--json", "--backend", "numpy", "--encoding-errors", "replace",
                      input=b"caf\xe9\n")
    assert replaced.exit_code == 0 and json.loads(replaced.stdout)[0]["text"] == "caf\ufffd"


def test_score_refuses_a_device_on_standard_input(char_run):
    proc = subprocess.run([*MODULE, "score", str(char_run), "-f", "-", "--backend", "numpy"], stdin=open("/dev/zero"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "device" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# item 8: Ctrl-C while the CLI imports


def _importing_numpy(pid: int) -> bool:
    """Whether the process has loaded NumPy's extension: it is importing mlxrnn (after Python's
    own start-up, which no program can guard), so the command's first lines have run."""
    try:
        return "numpy" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the imports start")
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3])
def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path, corpus, delay):
    process = subprocess.Popen([*MODULE, "train", str(corpus), *TINY_FLAGS, "--out", str(tmp_path / "run")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.time() + 60
    while not _importing_numpy(process.pid):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.002)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode in (130, -signal.SIGINT), (process.returncode, stderr)
    if process.returncode == 130:  # one line: stopped while starting, or (a fast machine) saved a first step
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and (lines[0].startswith("Error: ") and "interrupted" in lines[0]
                                    or lines[0].startswith("SIGINT received: saved step")), stderr


# --------------------------------------------------------------------------------------------
# item 10: stop decisions are kept


def _stalled(corpus, **changes) -> TrainOptions:
    """A run whose validation cannot improve (a learning rate of 1e-9): its stop rules decide."""
    return _options(corpus, steps=60, eval_every=1, lr=1e-9, **changes)


def test_an_early_stopped_run_stays_stopped_when_resumed_as_it_was(tmp_path, corpus):
    run = tmp_path / "run"
    first = train_language_model(_stalled(corpus, patience=2, schedule="none"), run)
    assert first.stopped_because.startswith("early stopping") and first.steps == 3
    again = train_language_model(TrainOptions(), run, resume=True, given=())
    assert again.steps == 3 and _step(run) == 3
    assert "early stopping" in again.stopped_because and "`patience`" in again.stopped_because
    result = invoke("train", "--resume", "--out", run, "--steps", "80", "--quiet", "--sample-length", "0")
    assert result.exit_code == 0 and _step(run) == 3, result.output
    assert "--patience" in result.stdout and "step 3" in result.stdout
    longer = train_language_model(TrainOptions(patience=4, steps=60), run, resume=True, given=("patience",))
    assert longer.steps > 3 and longer.stopped_because.startswith("early stopping")


def test_a_run_stopped_at_the_learning_rate_floor_stays_stopped(tmp_path, corpus):
    run = tmp_path / "run"
    stalled = _stalled(corpus, schedule="plateau", decay_patience=1, min_lr=5e-10, at_min_lr="stop")
    first = train_language_model(stalled, run)
    assert "floor" in first.stopped_because and first.steps == 3
    again = train_language_model(TrainOptions(), run, resume=True, given=())
    assert again.steps == 3 and "`at_min_lr` continue" in again.stopped_because
    result = invoke("train", "--resume", "--out", run, "--quiet", "--sample-length", "0")
    assert result.exit_code == 0 and "--at-min-lr continue" in result.stdout, result.output
    resumed = train_language_model(TrainOptions(at_min_lr="continue", steps=6), run, resume=True,
                                   given=("at_min_lr", "steps"))
    assert resumed.steps == 6 and resumed.stopped_because == "step limit reached"


def test_the_stop_decision_is_in_the_checkpoint_written_when_it_was_made(tmp_path, corpus, monkeypatch):
    """kill -9 just after the checkpoint of the deciding evaluation: the resumed run does not train on."""
    from mlxrnn.run import records

    run = tmp_path / "run"
    original = records.RunRecords.save

    def save_then_die(self, tags=("last",), **kwargs):
        path = original(self, tags, **kwargs)
        if self.state.step == 3:
            raise SystemExit("killed")  # nothing after this checkpoint is written
        return path

    monkeypatch.setattr(records.RunRecords, "save", save_then_die)
    with pytest.raises(SystemExit):
        train_language_model(_stalled(corpus, patience=2, schedule="none"), run)
    monkeypatch.undo()
    again = train_language_model(TrainOptions(), run, resume=True, given=())
    assert again.steps == 3 and again.stopped_because.startswith("early stopping")


# --------------------------------------------------------------------------------------------
# item 13: split file names that are not UTF-8


@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_split_file_name_that_is_not_utf8_is_refused_at_the_start(tmp_path, corpus, split):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/held\xff.txt")
    shutil.copy(corpus, name)
    run = tmp_path / "run"
    with pytest.raises(DataError, match=f"`{split}` file name .* is not valid UTF-8"):
        train_language_model(_options(corpus, **{split: name}), run)
    assert not run.exists()


# --------------------------------------------------------------------------------------------
# item 15: the nucleus always keeps the most likely allowed token


@pytest.mark.parametrize("backend", ["numpy", "mlx"])
def test_a_tiny_top_p_samples_the_most_likely_token(char_run, backend):
    if backend == "mlx":
        pytest.importorskip("mlx.core")
    from mlxrnn.lm.model import load_language_model
    from mlxrnn.lm.sampling import sample
    from mlxrnn.models.decoding import SamplingOptions

    lm, _ = load_language_model(char_run, backend=backend)
    greedy = sample(lm, length=30, prime="Th", options=SamplingOptions(greedy=True), seed=0).texts[0]
    for top_p in (1e-320, 1e-45, 1e-12):
        tiny = sample(lm, length=30, prime="Th", options=SamplingOptions(top_p=top_p), seed=1).texts[0]
        assert "<PAD>" not in tiny and tiny == greedy, (top_p, tiny, greedy)


def test_mlx_filtering_never_leaves_only_banned_tokens():
    mx = pytest.importorskip("mlx.core")
    from mlxrnn.lm.mlx_sampling import filter_logits
    from mlxrnn.models.decoding import SamplingOptions

    logits = mx.array(np.array([[9.0, 1.0, 3.0, 2.0], [5.0, 5.0, 0.0, 4.0]], np.float32))
    banned = mx.array(np.array([True, False, False, False]))
    for top_p in (1e-320, 1e-40, 0.01):
        for top_k in (None, 1, 2):
            z = np.array(filter_logits(logits, SamplingOptions(top_p=top_p, top_k=top_k), banned))
            assert np.isneginf(z[:, 0]).all()
            assert [int(np.argmax(row)) for row in z] == [2, 1]
            assert (np.isfinite(z).sum(axis=1) >= 1).all()


@pytest.mark.parametrize("where", ["__del__", "weakref callback"])
def test_ctrl_c_inside_a_finalizer_is_not_lost(where):
    """Python runs a signal's handler in whatever code runs when it arrives; a KeyboardInterrupt
    raised inside a finalizer is printed as "Exception ignored" and dropped, and the command
    trained on. The CLI's handler sends the signal again once ordinary code runs."""
    import weakref

    from mlxrnn_cli.common import interrupt_outside_finalizers

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    class Target:
        pass

    previous = signal.signal(signal.SIGINT, interrupt_outside_finalizers)
    try:
        with pytest.raises(KeyboardInterrupt):
            if where == "__del__":
                Finalized()  # released at once: its __del__ receives the Ctrl-C
            else:
                target = Target()
                weakref.finalize(target, signal.raise_signal, signal.SIGINT)
                del target
            for _ in range(200):  # ordinary code: the signal sent again arrives here
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous)
