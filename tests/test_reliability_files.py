"""Reliability, round two (issue 17): files that cannot hang us, output that fails cleanly.

* special files — a model file linked to /dev/zero, FIFOs as model file, meta.json, pointer or
  corpus, files larger than recorded — are refused in one line before any byte is read (item 4);
* standard output full (/dev/full) or closed (``>&-``) is one line and a non-zero exit on every
  command; ``bench -o`` into a missing directory fails before the benchmark runs (item 2);
* SIGHUP saves like SIGTERM (but ``nohup`` keeps it ignored); ``sample`` streams any length in
  constant memory, also as JSON; a UTF-8 BOM is not a token; ``--lowercase`` with characters and
  ``--out ''`` are refused; ``--max-vocab`` works for characters (item 10).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlxrnn_cli import bench as bench_cli
from mlxrnn_cli.main import cli

from mlxrnn.errors import CheckpointError, ConfigError, DataError, Interrupted
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.lm.model import load_language_model
from mlxrnn.lm.sampling import MAX_KEPT_TOKENS, sample
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.run.loop import TrainOptions, train_language_model
from mlxrnn.text.corpus import read_text
from tests.reliability_support import TINY, TINY_FLAGS, assert_clean, char_run, corpus, invoke

__all__ = ["char_run", "corpus"]  # module fixtures shared with test_reliability

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) if the block blocks."""
    def expire(signum, frame):
        raise TimeoutError("blocked: a special file was opened or read as if it were a file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _checkpoint(run: Path) -> Path:
    return run / json.loads((run / "best.json").read_text())["checkpoint"]


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


SPECIAL_FILES = {  # how the run is damaged, what the one-line error says
    "model.safetensors links to /dev/zero": (
        lambda run, ck: ((ck / "model.safetensors").unlink(), (ck / "model.safetensors").symlink_to("/dev/zero")),
        "model.safetensors is a device, not a regular file"),
    "model.safetensors is a FIFO": (lambda run, ck: _fifo(ck / "model.safetensors"),
                                    "model.safetensors is a pipe (FIFO), not a regular file"),
    "meta.json is a FIFO": (lambda run, ck: _fifo(ck / "meta.json"), "meta.json is a pipe (FIFO)"),
    "best.json is a FIFO": (lambda run, ck: _fifo(run / "best.json"), "best.json is a pipe (FIFO)"),
    "model.safetensors grew": (lambda run, ck: (ck / "model.safetensors").open("ab").write(b"\0" * 10),
                               "were recorded when it was saved: size or sha256 mismatch"),
    "meta.json of 300 MB": (lambda run, ck: os.truncate(ck / "meta.json", 300 << 20), "more than the"),
}


@needs_fifo
@pytest.mark.parametrize("damage", list(SPECIAL_FILES))
def test_special_files_in_a_run_are_refused_unread(tmp_path, char_run, damage):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    make, message = SPECIAL_FILES[damage]
    make(run, _checkpoint(run))
    started = time.perf_counter()
    with no_hang():
        with pytest.raises(CheckpointError, match=re.escape(message)) as caught:
            load_language_model(run, backend="numpy")
        assert "\n" not in str(caught.value)
        assert_clean(invoke("sample", run, "--length", "3", "--backend", "numpy"), 1, message)
    assert time.perf_counter() - started < 10


@needs_fifo
def test_a_fifo_as_last_json_fails_a_resume_in_one_line(tmp_path, char_run):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    _fifo(run / "last.json")
    with no_hang():
        assert_clean(invoke("train", "--resume", "--out", run, "--steps", "8", "--quiet"), 1,
                     "last.json is a pipe (FIFO), not a regular file")


@needs_fifo
def test_a_corpus_fifo_is_read_with_a_writer_and_refused_without(tmp_path, corpus):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    with no_hang():
        with pytest.raises(DataError, match="is a pipe \\(FIFO\\) that nobody writes to"):
            read_text(fifo)
        assert_clean(invoke("train", fifo, *TINY_FLAGS, "--out", tmp_path / "run"), 1, "nobody writes to")
        text = corpus.read_text()
        read_end, write_end = os.pipe()  # what `mlxrnn train <(zcat corpus.gz)` passes: /dev/fd/N
        writer = threading.Thread(target=lambda: (os.write(write_end, text.encode()), os.close(write_end)), daemon=True)
        writer.start()
        try:
            assert read_text(f"/dev/fd/{read_end}") == text
        finally:
            writer.join()
            os.close(read_end)
        link = tmp_path / "zero.txt"
        link.symlink_to("/dev/zero")
        with pytest.raises(DataError, match="is a device"):
            read_text(link)


# --------------------------------------------------------------------------------------------
# item 2: standard output that cannot be written, on every command


def _commands(root: Path, run: Path, corpus_path: Path) -> dict[str, list[str]]:
    bench = ["bench", "--cells", "rnn", "--sizes", "B=1,T=2,E=2,H=2,V=5,L=1", "--tasks", "forward", "--repeats",
             "1", "--warmup", "0", "--backends", "numpy", "-q", "-o", str(root / "report.json")]
    return {
        "train": ["train", str(corpus_path), *TINY_FLAGS, "--out", str(root / "trained")],
        "sample": ["sample", str(run), "--length", "5", "--backend", "numpy"],
        "score": ["score", str(run), "hello", "--backend", "numpy"],
        "eval": ["eval", str(run), str(corpus_path), "--backend", "numpy"],
        "bench": bench,
        "info": ["info"],
    }


def test_unwritable_stdout_fails_every_command_in_one_line(tmp_path, char_run, corpus):
    """All twelve processes run at once (the machine may have few cores, not much time)."""
    processes = {}
    for how in ("full", "closed"):
        root = tmp_path / how
        root.mkdir()
        for name, argv in _commands(root, char_run, corpus).items():
            stdout = open("/dev/full", "w") if how == "full" else subprocess.DEVNULL  # noqa: SIM115
            processes[how, name] = subprocess.Popen(
                [sys.executable, "-m", "mlxrnn_cli.main", *argv], stdout=stdout, stderr=subprocess.PIPE, text=True,
                preexec_fn=(lambda: os.close(1)) if how == "closed" else None)
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this platform")
    for (how, name), process in processes.items():
        _, stderr = process.communicate(timeout=180)
        lines = stderr.strip().splitlines()
        assert process.returncode == 1, (how, name, stderr)
        assert "Traceback" not in stderr and len(lines) == 1, (how, name, stderr)
        expected = "cannot write to standard output: the disk is full" if how == "full" else "standard output is closed"
        assert lines[0].startswith("Error: ") and expected in lines[0], (how, name, lines)
    assert _step(tmp_path / "full" / "trained") == 2  # the run itself was saved before the summary failed
    assert json.loads((tmp_path / "full" / "report.json").read_text())["results"]  # so was the report
    assert not (tmp_path / "closed" / "trained").exists()  # refused before anything was done


def _step(run: Path) -> int:
    return load_checkpoint(run, tag="last").meta["training"]["state"]["step"]


def test_bench_output_is_checked_before_the_benchmark_runs(tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran although its report could not be written")

    monkeypatch.setattr(bench_cli, "run_benchmarks", must_not_run)
    assert_clean(invoke("bench", "-o", "/nonexistent/x.json"), 1, "/nonexistent/x.json", "directory does not exist")
    assert_clean(invoke("bench", "-o", tmp_path), 2, "is a directory")  # click's own check of dir_okay=False
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------
# item 10: SIGHUP, sampling without limits, BOM, options that did nothing


def test_sighup_saves_like_sigterm_unless_nohup_ignored_it(tmp_path, corpus):
    def hang_up_at_step_2(progress):
        if progress.step == 2:
            os.kill(os.getpid(), signal.SIGHUP)

    run = tmp_path / "run"
    options = TrainOptions(corpus=str(corpus), backend="numpy", **{**TINY, "steps": 6, "eval_every": 1000})
    with pytest.raises(Interrupted, match="SIGHUP received: saved step 2") as stop:
        train_language_model(options, run, progress=hang_up_at_step_2)
    assert stop.value.signal_number == signal.SIGHUP and _step(run) == 2
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        summary = train_language_model(options, tmp_path / "nohup", progress=hang_up_at_step_2)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert summary.steps == 6


def test_a_hangup_stops_the_cli_with_a_saved_checkpoint(tmp_path, corpus):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "train", str(corpus), *TINY_FLAGS, "--steps", "100000000",
         "--out", str(run)], stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # even if this test runs under nohup
    deadline = time.time() + 60
    while not (run / "metrics.jsonl").exists() or '"train"' not in (run / "metrics.jsonl").read_text():
        assert process.poll() is None and time.time() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)  # the terminal closed
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGHUP, stderr
    assert "Traceback" not in stderr and "SIGHUP received: saved step" in stderr
    assert _step(run) >= 1


def test_sampling_streams_any_length_in_constant_memory(char_run):
    lm, _ = load_language_model(char_run, backend="numpy")
    peaks = []
    for length in (100, 1500):
        seen = []
        tracemalloc.start()
        result = sample(lm, length=length, seed=1, on_token=lambda i, text, seen=seen: seen.append(len(text)), keep=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(seen) == length and result.ids == [] and result.texts == []
    assert peaks[1] < peaks[0] + 20_000  # 15x the tokens, not 15x the memory (kept ids would add ~50 KB)
    with pytest.raises(ConfigError, match="would be held in memory until the end"):
        sample(lm, length=MAX_KEPT_TOKENS, num_samples=2)


def test_sample_json_streams_the_same_document(char_run):
    lm, _ = load_language_model(char_run, backend="numpy")
    expected = sample(lm, length=40, prime="The", seed=3, options=SamplingOptions(temperature=0.7))
    out = invoke("sample", char_run, "--length", "40", "--prime", "The", "--seed", "3", "--temperature", "0.7",
                 "--backend", "numpy", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.stdout == json.dumps({"prime": "The", "samples": expected.texts}, indent=2) + "\n"
    assert json.loads(out.stdout)["samples"] == expected.texts
    huge = invoke("sample", char_run, "--length", str(MAX_KEPT_TOKENS), "-n", "2", "--backend", "numpy")
    assert_clean(huge, 2, "--length × --num-samples", "draw one sample")


def test_a_billion_token_json_sample_prints_as_it_goes(char_run):
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "sample", str(char_run), "--length", "1000000000", "--json",
         "--backend", "numpy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = process.stdout.read(200).decode()
    finally:
        process.kill()
        process.wait()
    assert head.startswith('{\n  "prime": "",\n  "samples": [\n    "') and len(head) == 200


def test_a_byte_order_mark_is_not_a_token(tmp_path, corpus, char_run):
    text = corpus.read_text()
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert read_text(bom) == text
    run = tmp_path / "run"
    train_language_model(TrainOptions(corpus=str(bom), backend="numpy", **{**TINY, "steps": 2}), run)
    assert "\ufeff" not in load_checkpoint(run).meta["vocab"]["tokens"]
    plain = invoke("eval", char_run, corpus, "--backend", "numpy", "--json")
    marked = invoke("eval", char_run, bom, "--backend", "numpy", "--json")
    assert json.loads(plain.stdout) == json.loads(marked.stdout)


def test_options_that_did_nothing_are_refused_or_work(tmp_path, corpus, monkeypatch):
    assert_clean(invoke("train", corpus, *TINY_FLAGS, "--lowercase", "--out", tmp_path / "a"), 2,
                 "--lowercase applies to word models (--level word)")
    with pytest.raises(ConfigError, match="`lowercase` applies to word models"):
        TrainOptions(lowercase=True).validate()
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert_clean(invoke("train", corpus, *[f for f in TINY_FLAGS if f != "--quiet"], "--out", ""), 2,
                 "--out is empty")  # before anything is printed
    with pytest.raises(ConfigError, match="`run_dir` is empty"):
        train_language_model(TrainOptions(corpus=str(corpus), backend="numpy", **TINY), "")
    assert os.listdir(".") == []  # nothing was written where '' would have pointed (here, or runs/...)
    run = tmp_path / "capped"
    assert invoke("train", corpus, *TINY_FLAGS, "--max-vocab", "12", "--out", run).exit_code == 0
    tokens = load_checkpoint(run).meta["vocab"]["tokens"]
    assert len(tokens) == 12 and tokens[3] == " "  # the most frequent characters, the rest <UNK>


def test_the_cli_runner_output_is_left_alone():
    """In-process callers (tests, notebooks) keep their own stdout: only a real process's is guarded."""
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["mlxrnn"]
