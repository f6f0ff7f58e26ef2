"""What data-parallel training costs on this machine: tokens/s for 1 and 2 processes, and the
communication overhead per step, in milliseconds and as a share of the step.

Three runs of the same character model on the bundled corpus, each ``--steps`` timed steps after
``--warmup`` untimed ones:

    1 process,  batch B      the per-process work of the 2-process run, without communication
    1 process,  batch 2B     the same global batch as the 2-process run
    2 processes, batch B     mlx.launch -n 2 --backend ring on 127.0.0.1

In the 2-process run every rank times its whole ``Trainer.step`` and the all-reduce inside it
(``grad_transform``: NumPy → one MLX buffer, ``all_sum``, back; it includes waiting for the slower
rank). After training, the ranks also time ``all_sum`` of a buffer of the gradients' size alone,
in lockstep: the pure communication cost. Results go to
``benchmarks/results/distributed_overhead.json``.

    python benchmarks/distributed_overhead.py [--hidden 256 --batch-size 16 --steps 40]

With several processes on one machine, BLAS threads × processes should not exceed the cores:
the runs set ``OPENBLAS_NUM_THREADS`` (``--blas-threads``, default 1) for all three.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "distributed_overhead.json"


# --- one process of a run -----------------------------------------------------------------------
def worker(config: dict, out_dir: Path) -> None:
    import numpy as np

    from mlxrnn.run.loop import LanguageModelRun, TrainOptions
    from mlxrnn.training.distributed import init_distributed

    dist = init_distributed()
    options = TrainOptions(**config["options"])
    ends: list[float] = []
    run = LanguageModelRun(
        options,
        out_dir / "run",
        progress=lambda p: ends.append(time.perf_counter()) if p.event == "train" else None,
        distributed=dist,
    )
    step_times, reduce_times = [], []
    step, transform = run.trainer.step, run.trainer.grad_transform

    def timed_step(batch):
        start = time.perf_counter()
        result = step(batch)
        step_times.append(time.perf_counter() - start)
        return result

    def timed_transform(loss, grads):
        start = time.perf_counter()
        reduced = transform(loss, grads)
        reduce_times.append(time.perf_counter() - start)
        return reduced

    run.trainer.step = timed_step
    if transform is not None:
        run.trainer.grad_transform = timed_transform
    run.train()

    warmup = config["warmup"]
    record = {
        "rank": dist.rank,
        "processes": dist.size,
        "parameters": int(sum(p.size for p in run.lm.model.numpy_parameters().values())),
        "step_ms": [1e3 * t for t in step_times[warmup:]],
        "allreduce_ms": [1e3 * t for t in reduce_times[warmup:]],
        "tokens_per_step": options.batch_size * options.seq_len * dist.size,
    }
    if ends:  # rank 0: wall time per loop iteration (batch slicing, step, logging) after warmup
        record["loop_seconds"] = ends[-1] - ends[warmup - 1]
        record["loop_steps"] = len(ends) - warmup
    if dist.size > 1:  # pure communication: all_sum of a gradient-sized buffer, ranks in lockstep
        import mlx.core as mx

        buffer = mx.array(np.ones(record["parameters"] + 4, np.float32))
        times = []
        for _ in range(config["warmup"] + config["steps"]):
            dist.barrier()
            start = time.perf_counter()
            mx.eval(mx.distributed.all_sum(buffer, group=dist.group, stream=mx.cpu))
            times.append(time.perf_counter() - start)
        record["isolated_all_sum_ms"] = [1e3 * t for t in times[warmup:]]
    (out_dir / f"rank{dist.rank}.json").write_text(json.dumps(record))


# --- the driver ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], env: dict, timeout: float) -> None:
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and its ranks share one process group
        raise SystemExit(f"timed out after {timeout}s: {' '.join(command)}") from None
    if process.returncode != 0 or "exited with code" in err:  # mlx.launch exits 0 when a rank fails
        raise SystemExit(f"failed: {' '.join(command)}\n{out}\n{err}")


def measure(processes: int, batch_size: int, args, env: dict) -> dict:
    options = dict(
        layers=args.layers,
        hidden=args.hidden,
        embed=args.embed,
        seq_len=args.seq_len,
        batch_size=batch_size,
        dropout=0.0,
        backend=args.backend,
        steps=args.warmup + args.steps,
        eval_every=10**9,
        log_every=10**9,
    )
    config = {"options": options, "warmup": args.warmup, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config), tmp]
        if processes > 1:
            launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or "mlx.launch"
            ring = ["-n", str(processes), "--backend", "ring", "--starting-port", str(_free_port())]
            command = [launcher, *ring, "--", *command]
        _run(command, env, args.timeout)
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(processes)]
    main = ranks[0]
    result = {
        "processes": processes,
        "batch_per_process": batch_size,
        "global_batch": batch_size * processes,
        "tokens_per_second": main["tokens_per_step"] * main["loop_steps"] / main["loop_seconds"],
        "step_ms_median": statistics.median(main["step_ms"]),
        "parameters": main["parameters"],
    }
    if processes > 1:
        allreduce = [statistics.median(r["allreduce_ms"]) for r in ranks]
        step = [statistics.median(r["step_ms"]) for r in ranks]
        result.update(
            allreduce_ms_median_per_rank=allreduce,
            allreduce_share_of_step_per_rank=[a / s for a, s in zip(allreduce, step)],
            isolated_all_sum_ms_median=statistics.median(main["isolated_all_sum_ms"]),
            gradient_buffer_megabytes=4 * (main["parameters"] + 4) / 1e6,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "OUT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "mlx"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="B: streams per process")
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--blas-threads", type=int, default=1, help="OPENBLAS_NUM_THREADS for every process")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker[0]), Path(args.worker[1]))
        return

    import mlx.core as mx
    import numpy as np

    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(args.blas_threads)}
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure; it is recorded
    B = args.batch_size
    runs = [measure(1, B, args, env), measure(1, 2 * B, args, env), measure(2, B, args, env)]
    one, one_global, two = runs
    allreduce_ms = statistics.mean(two["allreduce_ms_median_per_rank"])
    summary = {
        "speedup_vs_1_process_same_global_batch": two["tokens_per_second"] / one_global["tokens_per_second"],
        "allreduce_ms_per_step": allreduce_ms,
        "allreduce_share_of_step": allreduce_ms / two["step_ms_median"],
        "isolated_all_sum_ms": two["isolated_all_sum_ms_median"],
        "step_ms_2_processes_minus_1_process_same_work": two["step_ms_median"] - one["step_ms_median"],
    }
    report = {
        "benchmark": "distributed_overhead",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "mlx": mx.__version__,
            "numpy": np.__version__,
            "load_average_1min_at_start": load_at_start,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "out")} | {"out": str(args.out)},
        "runs": runs,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for run in runs:
        print(
            f"{run['processes']} process(es) × batch {run['batch_per_process']}: "
            f"{run['tokens_per_second']:,.0f} tok/s, step {run['step_ms_median']:.1f} ms"
        )
    print(
        f"all-reduce: {allreduce_ms:.2f} ms/step = {100 * summary['allreduce_share_of_step']:.1f}% of the step "
        f"({two['gradient_buffer_megabytes']:.2f} MB; all_sum alone {summary['isolated_all_sum_ms']:.2f} ms)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
