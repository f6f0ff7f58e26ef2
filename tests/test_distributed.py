"""Data-parallel training: N processes with batch B compute what one process with batch N·B does.

The multi-process tests start 2 processes on the loopback interface with ``mlx.launch -n 2
--backend ring``, in their own process group so a hung run is killed as a whole after TIMEOUT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.errors import ConfigError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import LanguageModelRun, TrainOptions
from mlxrnn.text.batching import LMBatcher
from mlxrnn.text.corpus import bundled_corpus_path
from mlxrnn.training.distributed import DataParallel, ShardedBatcher, ShardedDropoutRNG, init_distributed

try:
    import mlx.core as mx
except ImportError:
    mx = None
needs_mlx = pytest.mark.skipif(
    mx is None, reason="data-parallel training runs on MLX's distributed engine: pip install mlx / 'mlx[cpu]'"
)
LAUNCHER = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or shutil.which("mlx.launch")
needs_launcher = pytest.mark.skipif(LAUNCHER is None, reason="the mlx.launch command is not installed")

TIMEOUT = 120  # seconds for one launch of 2 processes (each takes a few seconds here)
B = 4  # streams per process; the 1-process reference runs 2·B
TINY = dict(layers=2, hidden=16, embed=8, seq_len=16, dropout=0.3, lr=0.01, eval_every=5, log_every=1, steps=10)

# One rank of a data-parallel run: train, then save this replica's parameters as rank<r>.npz.
WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from mlxrnn.training.distributed import init_distributed
    from mlxrnn.run.loop import LanguageModelRun, TrainOptions

    options, run_dir, out = TrainOptions(**json.loads(sys.argv[1])), sys.argv[2], sys.argv[3]
    dist = init_distributed()
    run = LanguageModelRun(options, run_dir, distributed=dist)
    run.train()
    np.savez(f"{out}/rank{dist.rank}.npz", **run.lm.model.numpy_parameters())
    """
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:  # the ring backend listens on port and port + 1
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` as 2 ring-connected processes on 127.0.0.1; fail (after killing them) on timeout."""
    args = [LAUNCHER, "-n", "2", "--backend", "ring", "--starting-port", str(_free_port()), "--", *command]
    process = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks: one process group
        out, err = process.communicate()
        pytest.fail(f"2-process run did not finish in {TIMEOUT}s\nstdout:\n{out}\nstderr:\n{err}")
    # mlx.launch exits 0 even when a rank fails; it reports the rank's exit code on stderr.
    assert process.returncode == 0 and "exited with code" not in err and "was killed" not in err, (
        f"stdout:\n{out}\nstderr:\n{err}"
    )
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _records(run: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def _max_abs_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


# --- two processes ------------------------------------------------------------------------------
@needs_mlx
@needs_launcher
@pytest.mark.parametrize("backend", ["numpy", "mlx"])
def test_two_processes_train_like_one_with_twice_the_batch(tmp_path, corpus, backend):
    options = dict(corpus=corpus, backend=backend, **TINY)
    one = LanguageModelRun(TrainOptions(batch_size=2 * B, **options), tmp_path / "one")
    one.train()
    reference = one.lm.model.numpy_parameters()

    (tmp_path / "worker.py").write_text(WORKER)
    config = json.dumps({"batch_size": B, **options})
    launch_two(sys.executable, "worker.py", config, str(tmp_path / "two"), str(tmp_path), cwd=tmp_path)
    rank0, rank1 = (dict(np.load(tmp_path / f"rank{r}.npz")) for r in (0, 1))

    for name in rank0:  # the replicas never drift apart: they apply the same update to the same weights
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    difference = _max_abs_diff(rank0, reference)
    print(f"\n[{backend}] 10 steps, 2 processes × batch {B} vs 1 × {2 * B}: max |Δparam| = {difference:.2e}")
    for name in reference:
        np.testing.assert_allclose(rank0[name], reference[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # Rank 0 alone writes: each step is logged once, with the global batch's loss; validation
    # covers every process's rows, so it matches the 1-process run's.
    one_train, two_train = _records(tmp_path / "one", "train"), _records(tmp_path / "two", "train")
    assert [r["step"] for r in two_train] == list(range(1, 11))
    np.testing.assert_allclose([r["loss"] for r in two_train], [r["loss"] for r in one_train], rtol=1e-5)
    one_eval, two_eval = _records(tmp_path / "one", "eval"), _records(tmp_path / "two", "eval")
    assert [r["step"] for r in two_eval] == [5, 10]
    np.testing.assert_allclose([r["val_loss"] for r in two_eval], [r["val_loss"] for r in one_eval], rtol=1e-5)
    saved = load_checkpoint(tmp_path / "two", tag="last")
    assert saved.meta["training"]["world_size"] == 2
    carry = saved.optimizer_tensors["carry/0"]
    assert carry.shape[1] == 2 * B  # the checkpoint holds both processes' rows of the carried state


@needs_mlx
@needs_launcher
def test_cli_distributed_run_resumes_exactly(tmp_path, corpus):
    cli = [str(Path(sys.executable).parent / "mlxrnn"), "train", corpus, "--distributed", "--backend", "numpy"]
    flags = f"--layers 2 --hidden 16 --embed 8 --seq-len 16 --batch-size {B} --eval-every 4 --dropout 0.2".split()
    flags += ["--sample-length", "0", "--quiet"]
    launch_two(*cli, *flags, "--steps", "8", "--out", str(tmp_path / "whole"), cwd=tmp_path)
    launch_two(*cli, *flags, "--steps", "4", "--out", str(tmp_path / "split"), cwd=tmp_path)
    result = launch_two(*cli, *flags, "--steps", "8", "--resume", "--out", str(tmp_path / "split"), cwd=tmp_path)
    assert result.stdout.count("step limit reached") == 1  # rank 0 alone prints
    whole, split = _records(tmp_path / "whole", "eval"), _records(tmp_path / "split", "eval")
    assert [r["step"] for r in whole] == [r["step"] for r in split] == [4, 8]
    assert [r["val_loss"] for r in whole] == [r["val_loss"] for r in split]  # bit for bit
    a, b = (load_checkpoint(tmp_path / run, tag="last").weights for run in ("whole", "split"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --- one process: the helpers -------------------------------------------------------------------
@needs_mlx
def test_fused_all_reduce_is_one_all_sum_and_keeps_kinds_shapes_dtypes(monkeypatch):
    calls = []
    all_sum = mx.distributed.all_sum
    monkeypatch.setattr(mx.distributed, "all_sum", lambda x, **kw: calls.append(x.shape) or all_sum(x, **kw))
    dist = DataParallel(mx.distributed.init())  # a group of 1: the full path, and the sum is the identity
    rng = np.random.default_rng(0)
    tensors = {
        "W": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
        "loss": np.float32(2.5),
        "m": mx.array(rng.standard_normal((2, 2, 2)).astype(np.float32)),
    }
    reduced = dist.all_reduce_mean(tensors)
    assert calls == [(15 + 5 + 1 + 8,)]  # one all_sum over one flat buffer
    assert list(reduced) == list(tensors)
    for name, value in tensors.items():
        assert type(reduced[name]) is (mx.array if isinstance(value, mx.array) else np.ndarray)
        assert reduced[name].shape == np.shape(value) and reduced[name].dtype == value.dtype
        np.testing.assert_array_equal(np.array(reduced[name]), np.array(value))
    assert dist.sum_values(3.25, 7) == (3.25, 7.0)
    state = (np.arange(12.0).reshape(1, 4, 3), mx.ones((1, 4, 3)))
    gathered = dist.gather_state(state)
    np.testing.assert_array_equal(gathered[0], state[0])
    assert isinstance(gathered[1], mx.array) and gathered[1].shape == (1, 4, 3)


def test_single_process_is_a_no_op():
    dist = DataParallel()
    grads = {"W": np.ones((2, 2), np.float32)}
    loss, reduced = dist.average_step(np.float32(1.0), grads)
    assert reduced["W"] is grads["W"] and loss == 1.0
    assert dist.sum_values(1.5, 4) == (1.5, 4) and dist.agree(2.0, []) == (2.0, [])
    batcher = LMBatcher(np.arange(100), 4, 8)
    generator = np.random.default_rng(0)
    assert dist.shard_batcher(batcher) is batcher and dist.dropout_rng(generator) is generator
    assert dist.rows(8) == slice(0, 8) and dist.is_main


class _Rank(DataParallel):
    """Rank ``rank`` of ``size`` without a group: enough for the row arithmetic."""

    def __init__(self, rank: int, size: int):
        super().__init__()
        self.rank, self.size = rank, size


def test_each_rank_reads_its_rows_of_the_global_batch_and_of_its_dropout_masks():
    batcher = LMBatcher(np.arange(1000) % 37, 2 * B, 16)
    ranks = [_Rank(r, 2) for r in (0, 1)]
    for k in (0, len(batcher) - 1):
        inputs, targets = batcher.window(k)
        shards = [ShardedBatcher(batcher, rank.rows(2 * B)).window(k) for rank in ranks]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in shards]), inputs)
        np.testing.assert_array_equal(np.concatenate([y for _, y in shards]), targets)
        assert shards[1][0].shape == (B, inputs.shape[1])
    whole = np.random.default_rng(7).random(size=(5, 2 * B, 3))
    masks = [ShardedDropoutRNG(np.random.default_rng(7), rank).random(size=(5, B, 3)) for rank in ranks]
    np.testing.assert_array_equal(np.concatenate(masks, axis=1), whole)


def test_without_mlx_data_parallel_training_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlx.core", None)  # `import mlx.core` now raises ImportError
    with pytest.raises(ConfigError, match="MLX is not installed"):
        init_distributed()


@needs_mlx
def test_one_launched_process_trains_alone(monkeypatch, tmp_path):
    (tmp_path / "hosts").write_text("\n")  # what `mlx.launch -n 1` hands its single process
    monkeypatch.setenv("MLX_RANK", "0")
    monkeypatch.setenv("MLX_HOSTFILE", str(tmp_path / "hosts"))
    dist = init_distributed()
    assert dist.group is None and dist.size == 1 and dist.is_main
