"""Corpora as big as the disk: memory and start-up time against corpus size, prepared and not,
and how fast `mlxrnn prepare` tokenizes (benchmarks/results/corpus_scale.json).

    python benchmarks/corpus_scale.py                       # 10 and 100 MB; chars, words, bpe
    python benchmarks/corpus_scale.py --mb 1000 --kinds chars --prepared-only
    python benchmarks/corpus_scale.py --mb 2 -o /tmp/s.json  # a quick check that it runs

The corpus is tiny-shakespeare repeated to the size asked, plus two characters beyond Latin-1.
For every (size, tokenizer) it

* prepares it with ``mlxrnn prepare`` in a fresh process: seconds and MB/s of the tokenizing pass
  (the command's own progress numbers) and of the whole command;
* runs the first 5 steps of the default model (2 × 512 LSTM, batch 32, 128 steps, NumPy, one
  thread) in a fresh process, once from the prepared directory and once from the text (unless
  ``--prepared-only``): the peak resident set size (``ru_maxrss``) of that process and the seconds
  from its start to the end of the first step (imports, reading or mapping the data, the model, the
  step), and its resident memory after the imports and once the run is built (data + model, before
  the first step's activations). Tiny-shakespeare repeated has one vocabulary at every size, so the
  growth of these numbers with the size is the data's.

Memory hardly depends on what else the machine runs; seconds and MB/s do, so say how loaded it was.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import time
started = time.perf_counter()
import json, resource, sys
from mlxrnn.run.loop import LanguageModelRun
from mlxrnn.run.options import TrainOptions
def rss():  # resident now, MB
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 1e6
imported = rss()
corpus, kind, run_dir = sys.argv[1:4]
extra = {"vocab_size": 8192} if kind == "bpe" and not corpus.endswith("data") else {}
options = TrainOptions(corpus=corpus, tokenizer=None if corpus.endswith("data") else kind, backend="numpy",
                       steps=5, **extra)
run = LanguageModelRun(options, run_dir, force=True)
ready, ready_rss = time.perf_counter() - started, rss()
carry, first = None, None
for k in range(5):
    inputs, targets = run.train_batches.window(k)
    result = run.trainer.step({"inputs": inputs, "targets": targets, "initial_state": carry})
    carry = result.aux["final_state"]
    first = first or time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
run.close()
print(json.dumps({"peak_rss_mb": peak / 1e6, "rss_after_imports_mb": imported, "rss_ready_mb": ready_rss,
                  "seconds_to_ready": ready, "seconds_to_first_step": first,
                  "vocabulary": len(run.lm.vocab), "parameters": run.lm.model.num_parameters()}))
"""


def five_steps(corpus: Path, kind: str, run_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RAYON_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(corpus), kind, str(run_dir)], capture_output=True,
                          text=True, env=env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout)


def prepare(corpus: Path, kind: str, out: Path) -> dict:
    command = [sys.executable, "-m", "mlxrnn_cli.main", "prepare", str(corpus), "--out", str(out), "--tokenizer",
               kind, "--json", "--quiet", "--force"] + (["--vocab-size", "8192"] if kind == "bpe" else [])
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        return {"error": (done.stdout + done.stderr).strip().splitlines()[-1]}
    manifest = json.loads(done.stdout)
    mb = corpus.stat().st_size / 1e6
    ids_mb = sum(part["bytes"] for part in manifest["parts"].values()) / 1e6
    return {"seconds": seconds, "mb_per_second_overall": mb / seconds, "pass_mb_per_second": manifest["mb_per_second"],
            "ids_mb": ids_mb, "dtype": manifest["dtype"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[10.0, 100.0], help="corpus sizes in MB")
    parser.add_argument("--kinds", nargs="+", default=["chars", "words", "bpe"])
    parser.add_argument("--prepared-only", action="store_true", help="skip the runs straight from the text")
    parser.add_argument("-o", "--output", default="benchmarks/results/corpus_scale.json")
    args = parser.parse_args()
    from mlxrnn.text.corpus import bundled_corpus_path

    base = bundled_corpus_path().read_text(encoding="utf-8")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mb in args.mb:
            size = int(mb * 1e6)
            corpus = tmp / "corpus.txt"
            with open(corpus, "w", encoding="utf-8") as handle:  # written in pieces: no 1 GB string
                for _ in range(size // len(base)):
                    handle.write(base)
                handle.write(base[: size % len(base)] + "é€")
            for kind in args.kinds:
                data = tmp / f"{kind}-data"
                row = {"mb": mb, "tokenizer": kind, "prepare": prepare(corpus, kind, data)}
                row["prepared"] = five_steps(data, kind, tmp / "run")
                if not args.prepared_only:
                    row["text"] = five_steps(corpus, kind, tmp / "run")
                rows.append(row)
                print(json.dumps(row), flush=True)
                subprocess.run(["rm", "-rf", str(data)], check=False)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
              "platform": f"{platform.system()} {platform.machine()}", "cpus": os.cpu_count(),
              "load_average_at_end": os.getloadavg(), "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
