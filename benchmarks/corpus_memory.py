"""Peak memory of a training run's data path per corpus character (benchmarks/results/corpus_memory.json).

    python benchmarks/corpus_memory.py                 # a 10 MB corpus, char and word level
    python benchmarks/corpus_memory.py --mb 1 -o /tmp/m.json   # a quick check that it runs

Each measurement runs in a fresh process that reads the corpus, builds the vocabulary, encodes
the text and cuts it into training/validation streams exactly as ``mlxrnn train`` does
(:mod:`mlxrnn.run.data`), then reports the growth of its peak resident set size
(``ru_maxrss``) over the same process before the corpus was touched, divided by the number of
characters. The corpus is tiny-shakespeare repeated to the size asked, plus two characters
beyond Latin-1 (so Python stores it with 2 bytes a character, as most real corpora need).
Memory, unlike speed, hardly depends on what else the machine runs, but the allocator's page
granularity makes corpora below ~5 MB noisy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
from mlxrnn.run.options import TrainOptions
from mlxrnn.run.data import build_vocabulary, encode_corpus, load_corpus, make_batchers
def peak():  # bytes (Linux reports KiB, macOS bytes)
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024
options = TrainOptions(corpus=sys.argv[1], level=sys.argv[2], batch_size=32, seq_len=128)
before = peak()
text, _ = load_corpus(options)
tokenizer, vocab = build_vocabulary(options, text)[:2]  # as LanguageModelRun._start does
ids = encode_corpus(vocab, tokenizer, text)
train, val = make_batchers(options, ids)
print(json.dumps({"characters": len(text), "peak_growth_bytes": peak() - before, "ids_dtype": str(ids.dtype),
                  "vocabulary": len(vocab)}))
"""


def measure(corpus: Path, level: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(corpus), level], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    result["bytes_per_character"] = result["peak_growth_bytes"] / result["characters"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="corpus size in MB (default 10)")
    parser.add_argument("-o", "--output", default="benchmarks/results/corpus_memory.json")
    args = parser.parse_args()
    from mlxrnn.text.corpus import bundled_corpus_path

    base = bundled_corpus_path().read_text(encoding="utf-8")
    size = int(args.mb * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text((base * (size // len(base) + 1))[:size] + "é€", encoding="utf-8")
        results = {level: measure(corpus, level) for level in ("char", "word")}
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
              "platform": f"{platform.system()} {platform.machine()}", "corpus_mb": args.mb, "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for level, result in results.items():
        print(f"{level:5s} {result['characters']:>12,} characters  peak +{result['peak_growth_bytes'] / 1e6:8.1f} MB"
              f"  {result['bytes_per_character']:5.1f} bytes/character  ids {result['ids_dtype']}")


if __name__ == "__main__":
    main()
