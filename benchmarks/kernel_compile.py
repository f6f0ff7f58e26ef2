"""The one-off cost of the compiled (numba) kernels: first compilation, then loading from the cache.

    python benchmarks/kernel_compile.py

Runs three fresh processes that each build a float32 model per cell (LSTM, GRU reset_after, RNN)
and time its first training step and forward on a tiny batch: with the plain NumPy kernels (the
baseline), with numba and an empty kernel cache (compilation), and with numba again on that now
filled cache (what every later process pays). The extra over the baseline is the cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

WORKER = r"""
import json, time
import numpy as np
started = time.perf_counter()
from mlxrnn import SequenceModel, SequenceModelConfig
rng = np.random.default_rng(0)
batch = {"inputs": rng.integers(0, 11, (4, 8)), "targets": rng.integers(0, 11, (4, 8))}
for cell, options in (("lstm", {}), ("gru", {"variant": "reset_after"}), ("rnn", {})):
    model = SequenceModel(SequenceModelConfig(input_size=11, embed_size=8, hidden_size=16, output_size=11,
                                              cell=cell, cell_options=options))
    model.loss_and_grads(batch)
    model.rnn.step(x=np.zeros((1, 8), np.float32))
kernels = model.rnn.xp.time_loop.kernels.name
print(json.dumps({"seconds": time.perf_counter() - started, "kernels": kernels}))
"""


def run(kernels: str, cache_dir: str) -> dict:
    env = dict(os.environ, MLXRNN_KERNELS=kernels, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({kernels}): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    with tempfile.TemporaryDirectory() as cache_dir:
        baseline = run("numpy", cache_dir)
        compiled = run("numba", cache_dir)
        cached = run("numba", cache_dir)
    print(f"plain NumPy kernels: {baseline['seconds']:.2f} s (imports, three models, a step each)")
    compile_cost, load_cost = compiled["seconds"] - baseline["seconds"], cached["seconds"] - baseline["seconds"]
    print(f"numba, empty cache:  {compiled['seconds']:.2f} s -> compilation {compile_cost:.1f} s")
    print(f"numba, cache filled: {cached['seconds']:.2f} s -> import and loading {load_cost:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
