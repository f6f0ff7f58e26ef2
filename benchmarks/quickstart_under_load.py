"""The README's quickstart on a quiet machine and under a background load, thread settings alternating.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/quickstart_under_load.py [--seconds 15 --rounds 3]

Each round runs the quickstart's training (``mlxrnn train --layers 1 --hidden 256 --seq-len 64
--lr 4e-3``) for ``--seconds`` under every combination of

* load: none, or one busy process per core (started before the run, stopped after it);
* threads: mlxrnn's own choice (mlxrnn/backend/threads.py), ``OPENBLAS_NUM_THREADS`` = the
  number of cores (what OpenBLAS did by itself before), and ``OPENBLAS_NUM_THREADS=1``;

and reads the tokens/s of the run's final line. Alternating the settings within each round is
what makes them comparable on a machine whose speed drifts. Prints a Markdown table of medians
and the thread line each auto run printed; writes nothing but its temporary run directories.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

BUSY = "while True: pass"


def run_quickstart(seconds: float, out: str, threads: str | None) -> tuple[float, str]:
    """(tokens/s, the 'threads:' line) of one quickstart training run of ``seconds``."""
    env = dict(os.environ)
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "mlxrnn_cli.main", "train", "--minutes", f"{seconds / 60:.4f}", "--layers", "1",
               "--hidden", "256", "--seq-len", "64", "--lr", "4e-3", "--out", out, "--force", "--sample-length", "0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    rates = re.findall(r"([\d,]+) tok/s;", result.stderr + result.stdout)
    line = next((line for line in result.stderr.splitlines() if line.startswith("threads:")), "")
    return float(rates[-1].replace(",", "")), line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    settings = {"mlxrnn's choice": None, f"OPENBLAS_NUM_THREADS={cores}": str(cores), "OPENBLAS_NUM_THREADS=1": "1"}
    rates: dict = {(load, name): [] for load in ("quiet", "loaded") for name in settings}
    lines: dict = {"quiet": set(), "loaded": set()}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for load in ("quiet", "loaded"):
                for name, threads in settings.items():
                    count = cores if load == "loaded" else 0
                    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]
                    try:
                        rate, line = run_quickstart(args.seconds, os.path.join(scratch, "run"), threads)
                    finally:
                        for process in busy:  # only the processes started here
                            process.kill()
                            process.wait()
                    rates[(load, name)].append(rate)
                    if threads is None:
                        lines[load].add(line)
    print(f"| load | threads | tokens/s (median of {args.rounds}) | min–max |\n|---|---|---|---|")
    for (load, name), values in rates.items():
        print(f"| {load} | {name} | {statistics.median(values):,.0f} | {min(values):,.0f}–{max(values):,.0f} |")
    for load, seen in lines.items():
        print(f"{load}: " + " / ".join(sorted(seen)))


if __name__ == "__main__":
    main()
