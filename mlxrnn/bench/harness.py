"""Speed, measured side by side: the orchestration behind ``mlxrnn bench`` and ``benchmarks/``.

Three kinds of work on a language-model-shaped network (:mod:`mlxrnn.bench.sizes`), each timed
per implementation, cell and size:

* ``train``: one training step: forward, backpropagation through time, clipping by global
  norm 1.0, Adam (lr 1e-3). Tokens/s = batch × steps / seconds per step.
* ``forward``: the logits of one batch, no gradients. Same token count.
* ``sample``: batch 1, one token at a time, each drawn from softmax(logits) and fed back with
  the carried state. Tokens/s = tokens drawn / seconds.

Implementations: mlxrnn's own (``numpy`` with the point-wise kernels ``auto`` picks — numba's
when the ``fast`` extra is installed —, ``numpy-nojit`` with the plain NumPy ones, ``mlx``
eager, ``mlx-compiled`` — the default on MLX —, ``mlx-autodiff(-compiled)``;
:mod:`mlxrnn.bench.workloads`) and the peers ``torch``, ``mlx.nn`` and ``mlx.nn-compiled``
(:mod:`mlxrnn.bench.peers`), used only when installed.
MLX implementations also report the graph nodes (primitives) one training step evaluates.
The peers have no minGRU or minLSTM: their rows for those cells are skipped with a note.

Method: each (implementation, cell, size) runs in a fresh Python process, so thread pools,
allocators and imports do not leak between measurements and the process's peak resident set
size (``ru_maxrss``) can be read. That peak includes the framework's own import (a fact of
using it) — ``setup_rss_mb`` reports the resident size after imports and model construction so
the working memory of the run (the difference) can be compared too. Tasks run in the order
sample → forward → train, so each task's ``peak_rss_mb`` is the peak up to and including it.
Every measurement is synchronised (``mx.eval`` / ``.item()`` on MLX, ``.item()`` on torch);
``warmup`` untimed calls (compilation included) precede ``repeats`` timed ones; we report the
median and the min/max of the repeats. Tables: :mod:`mlxrnn.bench.report`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlxrnn.bench.machine import (
    busy_cpu_seconds,
    machine_info,
    mlx_device,
    sgemm_gflops,
    time_calls,
    wait_until_quiet,
)

#: mlxrnn's own implementations (``--backends``) and the peers ``--peers`` adds.
from mlxrnn.bench.peers import MLXNNWorkload, TorchWorkload
from mlxrnn.bench.report import format_rate
from mlxrnn.bench.sizes import CELLS, TASKS, Shape, gemm_flops, parse_size, tokens_per_call
from mlxrnn.bench.workloads import MlxrnnWorkload, Workload
from mlxrnn.errors import ConfigError, MLXRNNError

OWN_IMPLS = ("numpy", "numpy-nojit", "mlx", "mlx-compiled", "mlx-autodiff", "mlx-autodiff-compiled")
PEER_IMPLS = ("torch", "mlx.nn", "mlx.nn-compiled")
#: the cells the peers ship; their rows for any other cell (minGRU, minLSTM) are skipped with a note
PEER_CELLS = ("lstm", "gru", "rnn")
IMPLS = OWN_IMPLS + PEER_IMPLS


class BenchmarkError(MLXRNNError):
    """A benchmark worker failed (the message carries its last error line)."""


def make_workload(impl: str, cell: str, shape: Shape, seed: int = 0) -> Workload:
    if impl == "numpy":
        return MlxrnnWorkload("numpy", cell, shape, seed)
    if impl == "numpy-nojit":  # the plain NumPy point-wise kernels: what an install without numba runs
        from mlxrnn.backend.numpy_backend import NumpyBackend

        return MlxrnnWorkload(NumpyBackend("float32", kernels="numpy"), cell, shape, seed)
    if impl.startswith("mlx-"):
        return MlxrnnWorkload("mlx", cell, shape, seed, gradients="autodiff" if "autodiff" in impl else "bptt",
                              compiled=impl.endswith("compiled"))
    if impl == "mlx":
        return MlxrnnWorkload("mlx", cell, shape, seed)
    if impl == "torch":
        return TorchWorkload(cell, shape, seed)
    if impl in ("mlx.nn", "mlx.nn-compiled"):
        return MLXNNWorkload(cell, shape, seed, compiled=impl.endswith("compiled"))
    raise ConfigError(f"unknown implementation {impl!r}: choose from {', '.join(IMPLS)}")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def run_worker(spec: dict) -> dict:
    """Measure one (implementation, cell, shape) for the listed tasks; runs in its own process."""
    shape = Shape(**spec["shape"])
    started = time.perf_counter()
    workload = make_workload(spec["impl"], spec["cell"], shape, spec.get("seed", 0))
    result: dict[str, Any] = {"setup_seconds": time.perf_counter() - started, "setup_rss_mb": _peak_rss_mb(),
                              "tasks": {}}
    if spec["impl"] == "torch":
        import torch

        result["threads"] = torch.get_num_threads()
    calls = {"sample": lambda: workload.sample(spec["sample_tokens"]), "forward": workload.forward,
             "train": workload.train_step}
    for task in [t for t in TASKS[::-1] if t in spec["tasks"]]:  # sample, forward, train
        seconds = time_calls(calls[task], spec["warmup"], spec["repeats"])
        result["tasks"][task] = {"seconds": seconds, "peak_rss_mb": _peak_rss_mb()}
    if "train" in spec["tasks"]:  # after the timings: one more (untimed) step, counted
        nodes = workload.graph_nodes()
        if nodes is not None:
            result["graph_nodes"] = nodes
    return result


# --- orchestration (the parent process) -------------------------------------------------------


def available(impl: str) -> tuple[bool, str]:
    """Whether ``impl`` can run here, and if not, why (checked without importing frameworks)."""
    if impl in ("numpy", "numpy-nojit"):
        return True, ""
    if impl == "torch":
        return (importlib.util.find_spec("torch") is not None), "PyTorch is not installed (pip install torch)"
    from mlxrnn.backend import mlx_installed

    return mlx_installed(), "MLX is not installed (pip install 'mlx[cpu]' on Linux, 'mlx' on Apple silicon)"


@dataclass
class BenchSettings:
    cells: Sequence[str] = CELLS
    sizes: Sequence[str] = ("ref", "large")
    impls: Sequence[str] = ("numpy",)
    tasks: Sequence[str] = TASKS
    repeats: int = 5
    warmup: int = 2
    sample_tokens: int = 300
    baseline: str | None = None  # default: torch when measured, else the first implementation
    seed: int = 0
    #: re-measure a configuration while other processes used more than this share of the CPUs
    #: during it (after waiting for a quiet moment), up to ``busy_retries`` times; None: never
    max_background: float | None = None
    busy_retries: int = 3
    extra_notes: list = field(default_factory=list)

    def validate(self) -> BenchSettings:
        for label, values, allowed in (("cell", self.cells, CELLS), ("task", self.tasks, TASKS),
                                       ("implementation", self.impls, IMPLS)):
            if not values:
                raise ConfigError(f"choose at least one {label} ({', '.join(allowed)})")
            for value in values:
                if value not in allowed:
                    raise ConfigError(f"unknown {label} {value!r}: choose from {', '.join(allowed)}")
        for size in self.sizes:
            parse_size(size)
        for label, value, minimum in (("repeats", self.repeats, 1), ("warmup", self.warmup, 0),
                                      ("sample tokens", self.sample_tokens, 1)):
            if not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")
        if self.max_background is not None and not 0 < self.max_background <= 1:
            raise ConfigError(f"max background must be a CPU share in (0, 1], got {self.max_background!r}")
        if self.baseline is not None and self.baseline not in IMPLS:
            raise ConfigError(f"unknown baseline {self.baseline!r}: choose from {', '.join(IMPLS)}")
        return self


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_in_subprocess(spec: dict) -> dict:
    """Run one worker in a fresh process; also report the share of the machine other processes
    used meanwhile (``background_cpu``, Linux only), since on a busy machine timings mean little."""
    command = [sys.executable, "-m", "mlxrnn.bench.harness", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    busy, own, wall = busy_cpu_seconds(), _children_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise BenchmarkError(f"the {spec['impl']} {spec['cell']} benchmark worker failed: {reason}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    busy_after = busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        others = (busy_after - busy) - (_children_cpu_seconds() - own)
        result["background_cpu"] = max(0.0, others) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))
    return result


def _summary(seconds: list[float], tokens: int) -> dict:
    rates = sorted(tokens / s for s in seconds)
    return {"tokens_per_s": statistics.median(rates), "tokens_per_s_min": rates[0], "tokens_per_s_max": rates[-1]}


def run_benchmarks(settings: BenchSettings, progress: Callable[[str], None] | None = None,
                   isolate: bool = True) -> dict:
    """Measure every (implementation, cell, size) of ``settings``; returns the JSON-able report.

    ``progress`` receives one line per finished worker. ``isolate=False`` measures in this
    process instead of fresh ones (quicker, but peak memory then means nothing). Implementations that are not installed
    are skipped with a note. Rows carry ``ratio`` = tokens/s ÷ the baseline's on the same
    (cell, size, task), with ``ratio_min``/``ratio_max`` from the extremes of both spreads.
    """
    settings.validate()
    notes = list(settings.extra_notes)
    impls = []
    for impl in dict.fromkeys(settings.impls):
        ok, why = available(impl)
        if ok:
            impls.append(impl)
        else:
            notes.append(f"{impl} skipped: {why}")
    sizes = [parse_size(s) for s in dict.fromkeys(settings.sizes)]
    jobs = [(impl, cell, name, shape) for name, shape in sizes for cell in settings.cells for impl in impls
            if impl not in PEER_IMPLS or cell in PEER_CELLS]
    for impl in (i for i in impls if i in PEER_IMPLS):
        missing = [cell for cell in dict.fromkeys(settings.cells) if cell not in PEER_CELLS]
        if missing:
            notes.append(f"{impl} skipped for {', '.join(missing)}: it has no such cell")
    rows: list[dict] = []
    if progress is not None:
        progress(f"measuring {len(jobs)} configurations ({', '.join(impls)}) ...")
        if any(impl.startswith("mlx") for impl in impls):
            progress(f"MLX device: {mlx_device()}")
    yardstick_gflops = _run_in_subprocess_sgemm() if isolate else sgemm_gflops()
    for index, (impl, cell, size_name, shape) in enumerate(jobs, 1):
        spec = {"impl": impl, "cell": cell, "shape": asdict(shape), "tasks": list(settings.tasks),
                "repeats": settings.repeats, "warmup": settings.warmup, "sample_tokens": settings.sample_tokens,
                "seed": settings.seed}
        measured = _run_in_subprocess(spec) if isolate else run_worker(spec)
        for _ in range(settings.busy_retries if settings.max_background is not None else 0):
            if measured.get("background_cpu", 0.0) <= settings.max_background:
                break
            if progress is not None:
                progress(f"  {impl} {cell} {size_name}: other processes used {measured['background_cpu']:.0%} "
                         "of the CPUs meanwhile; measuring again when the machine is quiet")
            wait_until_quiet(settings.max_background)
            measured = _run_in_subprocess(spec)
        parts = []
        for task, data in measured["tasks"].items():
            tokens = tokens_per_call(shape, task, settings.sample_tokens)
            row = {"impl": impl, "cell": cell, "size": size_name, "shape": shape.describe(), "task": task,
                   **_summary(data["seconds"], tokens), "median_seconds": statistics.median(data["seconds"]),
                   "seconds": data["seconds"], "peak_rss_mb": data["peak_rss_mb"],
                   "setup_rss_mb": measured["setup_rss_mb"]}
            flops = gemm_flops(cell, shape, task)
            if flops:
                row["gemm_gflops"] = flops / row["median_seconds"] / 1e9
                row["fraction_of_sgemm_peak"] = row["gemm_gflops"] / yardstick_gflops
            for key in ("threads", "background_cpu"):
                if key in measured:
                    row[key] = measured[key]
            if task == "train" and "graph_nodes" in measured:
                row["graph_nodes"] = measured["graph_nodes"]
            rows.append(row)
            parts.append(f"{task} {format_rate(row['tokens_per_s'])}")
        if progress is not None:
            progress(f"[{index}/{len(jobs)}] {impl} {cell} {size_name}: " + ", ".join(parts) + " tok/s")
    baseline = settings.baseline or ("torch" if "torch" in impls else (impls[0] if impls else None))
    _add_ratios(rows, baseline)
    if baseline is not None and baseline not in impls:
        notes.append(f"baseline {baseline} was not measured: no ratios")
    return {"machine": machine_info(), "sgemm_1024_gflops": yardstick_gflops,
            "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(settings).items()
                         if k != "extra_notes"} | {"baseline": baseline},
            "results": rows, "notes": notes}


def _run_in_subprocess_sgemm() -> float:
    command = [sys.executable, "-c", "from mlxrnn.bench.harness import sgemm_gflops; print(sgemm_gflops())"]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(f"the sgemm yardstick failed: {proc.stderr.strip().splitlines()[-1:]}")
    return float(proc.stdout.strip())


def _add_ratios(rows: list[dict], baseline: str | None) -> None:
    reference = {(r["cell"], r["size"], r["task"]): r for r in rows if r["impl"] == baseline}
    for row in rows:
        base = reference.get((row["cell"], row["size"], row["task"]))
        if base is None:
            continue
        row["ratio"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["ratio_min"] = row["tokens_per_s_min"] / base["tokens_per_s_max"]
        row["ratio_max"] = row["tokens_per_s_max"] / base["tokens_per_s_min"]
        row["memory_ratio"] = row["peak_rss_mb"] / base["peak_rss_mb"]


def split_list(text: str | Iterable[str]) -> list[str]:
    """"a,b" or ["a,b", "c"] -> ["a", "b", "c"] (the CLI's comma-separated options)."""
    items = [text] if isinstance(text, str) else list(text)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


if __name__ == "__main__":  # the worker: python -m mlxrnn.bench.harness '{"impl": ..., ...}'
    try:
        print(json.dumps(run_worker(json.loads(sys.argv[1]))))
    except MLXRNNError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
