"""The real peer: PyTorch's ``word_language_model/main.py`` (github.com/pytorch/examples), run
unchanged, against ``mlxrnn train`` on the same tokens for the same wall-clock budget.

Data (:func:`prepare_unk_files`): the bundled tiny-shakespeare, lowercased and split by mlxrnn's
word tokenizer, one line per line, cut 90/5/5 by tokens at line boundaries into train.txt,
valid.txt and test.txt. Training words seen fewer than ``min_count`` times, and validation/test
words the training part lacks, are written as ``<unk>``. So both programs read the same
whitespace tokens (the example adds ``<eos>`` per line, mlxrnn ``<EOS>``), both vocabularies are
the training words, and both train ``<unk>``: mlxrnn's whitespace tokenizer reads the literal
``<unk>`` as its unknown word.

The example (:func:`run_pytorch_example`) runs as its README says, ``python main.py --tied
--dropout 0.5`` with its own initialisation (U(±0.1) encoder and decoder) and recipe (SGD lr 20,
clip 0.25, the rate divided by 4 after an epoch without improvement), on one thread
(``OMP_NUM_THREADS=1``). It has no time limit, so when the budget is spent it gets SIGINT: its
own Ctrl-C handler stops training, reloads its best checkpoint (saved at an epoch end) and prints
the test perplexity, which is its result at that many minutes. Its clock starts at its first
output line (after ``import torch``); mlxrnn's ``--minutes`` counts from its first step. Both
budgets include the validations. Each epoch's validation perplexity is read from its log.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlxrnn.text.corpus import bundled_corpus_path
from mlxrnn.text.tokenizers import WordTokenizer

#: one thread for every library either program uses
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "NUMBA_NUM_THREADS")}
_EPOCH_LINE = re.compile(
    r"\| end of epoch\s+(\d+) \| time:\s*([\d.]+)s \| valid loss\s+([\d.]+) \| valid ppl\s+([\d.]+)")
_TEST_LINE = re.compile(r"\| End of training \| test loss\s+([\d.]+) \| test ppl\s+([\d.]+)")


def tokenized_lines() -> list[list[str]]:
    """The bundled tiny-shakespeare, lowercased, word-tokenized, blank lines dropped."""
    tokenizer = WordTokenizer(lowercase=True, unk_token=None)
    text = bundled_corpus_path().read_text(encoding="utf-8")
    lines = [tokenizer.tokenize(line)[:-1] for line in text.split("\n")]  # [:-1]: the <EOS> each line gets
    return [words for words in lines if words]


def prepare_unk_files(folder: Path, min_count: int = 2, train_lines: int | None = None) -> dict:
    """Write train.txt, valid.txt, test.txt (90/5/5 by tokens) with rare and unseen words as <unk>.

    ``train_lines``: keep only the first that many training lines (a smoke test's short epochs).
    """
    lines = tokenized_lines()
    sizes = [len(words) + 1 for words in lines]  # + 1: the end-of-line token both programs add
    total, running, cuts = sum(sizes), 0, []
    for index, size in enumerate(sizes):
        running += size
        if len(cuts) < 2 and running >= (0.9, 0.95)[len(cuts)] * total:
            cuts.append(index + 1)
    parts = {"train": lines[: cuts[0]], "valid": lines[cuts[0] : cuts[1]], "test": lines[cuts[1] :]}
    if train_lines is not None:
        parts["train"] = parts["train"][:train_lines]
    counts = collections.Counter(word for words in parts["train"] for word in words)
    known = {word for word, count in counts.items() if count >= min_count}
    folder.mkdir(parents=True, exist_ok=True)
    info: dict = {"min_count": min_count, "vocabulary": len(known) + 2}  # + <unk> and the end-of-line token
    for name, part in parts.items():
        written = [[word if word in known else "<unk>" for word in words] for words in part]
        (folder / f"{name}.txt").write_text("\n".join(" ".join(words) for words in written) + "\n", encoding="utf-8")
        tokens = sum(len(words) + 1 for words in written)
        unknown = sum(words.count("<unk>") for words in written)
        info[name] = {"path": str(folder / f"{name}.txt"), "tokens": tokens, "unk_rate": unknown / tokens}
    return info


def _timestamped_lines(stream, started: list, lines: list) -> None:
    for line in iter(stream.readline, ""):
        now = time.perf_counter()
        if not started:
            started.append(now)  # the clock starts at the first line: torch is imported by then
        lines.append((now - started[0], line.rstrip("\n")))


def run_pytorch_example(main_py: Path, data_dir: Path, minutes: float, threads_env: dict | None = None,
                        extra: list[str] | None = None) -> dict:
    """Run the example's ``main.py`` unchanged on ``data_dir``; SIGINT after ``minutes``; parse its log."""
    main_py = Path(main_py).resolve()
    if not main_py.is_file() or not (main_py.parent / "model.py").is_file():
        sys.exit(f"{main_py} is not word_language_model/main.py of pytorch/examples (model.py and data.py beside it)")
    work = Path(tempfile.mkdtemp(prefix="pytorch-word-lm-"))
    flags = ["--data", str(data_dir), "--tied", "--dropout", "0.5", "--epochs", "100000", "--save",
             str(work / "model.pt"), *(extra or [])]
    command = [sys.executable, "-u", str(main_py), *flags]
    env = {**os.environ, **(threads_env if threads_env is not None else ONE_THREAD)}
    process = subprocess.Popen(command, cwd=main_py.parent, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    started: list[float] = []
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=_timestamped_lines, args=(process.stdout, started, lines), daemon=True)
    reader.start()
    while process.poll() is None and (not started or time.perf_counter() - started[0] < minutes * 60):
        time.sleep(0.2)
    stopped_at = time.perf_counter() - started[0] if started else None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # its own handler: stop, reload the best epoch, score the test text
    process.wait()
    reader.join(timeout=10)
    epochs = []
    for seconds, line in lines:
        match = _EPOCH_LINE.search(line)
        if match:
            epochs.append({"epoch": int(match[1]), "minutes": seconds / 60, "val_loss": float(match[3]),
                           "val_perplexity": float(match[4])})
    test = next((float(m[2]) for _, line in lines if (m := _TEST_LINE.search(line))), None)
    if test is None:
        tail = "\n".join(line for _, line in lines[-8:])
        reason = ("no epoch finished within the budget, so it had no checkpoint to test"
                  if not epochs else "it printed no test perplexity")
        sys.exit(f"the PyTorch example failed ({reason}; exit {process.returncode}):\n{tail}")
    return {"test_perplexity": test, "epochs": len(epochs), "curve": epochs, "stopped_at_minutes": stopped_at / 60,
            "command": " ".join(["python", str(main_py), *flags]), "exit_code": process.returncode,
            "threads": env.get("OMP_NUM_THREADS")}


def equal_epoch_rows(ours: list[dict], theirs: list[dict]) -> list[tuple[int, float, float]]:
    """(epoch, mlxrnn validation perplexity, example's) at each epoch end both reached."""
    mine = {c["epoch"]: c["val_perplexity"] for c in ours if c.get("epoch") is not None}
    return [(c["epoch"], mine[c["epoch"]], c["val_perplexity"]) for c in theirs if c["epoch"] in mine]


def race(args, run_mlxrnn, machine: dict, recipe: dict) -> dict:
    """Both programs on the same files for ``args.minutes`` each, one thread each, one after the
    other or (``args.at_once``) both at once. ``run_mlxrnn(settings, run_dir, threads)`` trains
    with ``mlxrnn train`` and returns its summary and curve; ``recipe`` is mlxrnn's."""
    work = Path(tempfile.mkdtemp(prefix="mlxrnn-word-race-"))
    data = prepare_unk_files(work / "data", args.min_count, args.train_lines)
    settings = dict(corpus=data["train"]["path"], valid=data["valid"]["path"], test=data["test"]["path"],
                    tokenizer="whitespace", layers=2, hidden=200, embed=200, batch_size=20, seq_len=35, tie=True,
                    dropout=0.5, seed=0, backend=args.backend, minutes=args.minutes, **recipe)
    jobs = {"mlxrnn": lambda: run_mlxrnn(settings, work / "mlxrnn", 1),
            "pytorch example": lambda: run_pytorch_example(Path(args.pytorch_example), work / "data", args.minutes)}
    if args.at_once:
        results: dict = {}
        threads = [threading.Thread(target=lambda n=name, job=job: results.__setitem__(n, job())) for name, job
                   in jobs.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if set(results) != set(jobs):
            sys.exit("a run failed; see the message above")
    else:
        results = {name: job() for name, job in jobs.items()}
    ratio = results["mlxrnn"]["test_perplexity"] / results["pytorch example"]["test_perplexity"]
    return {"benchmark": "word_lm_race", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine,
            "minutes_per_run": args.minutes, "schedule": "both at once" if args.at_once else "one after the other",
            "data": {k: v for k, v in data.items()}, "mlxrnn_recipe": recipe, "runs": results,
            "equal_epochs": equal_epoch_rows(results["mlxrnn"]["curve"], results["pytorch example"]["curve"]),
            "test_ratio": ratio}


def race_report(results: dict) -> list[str]:
    data, runs = results["data"], results["runs"]
    ours, theirs = runs["mlxrnn"], runs["pytorch example"]
    lines = [
        f"# Word LM race: mlxrnn against PyTorch's word_language_model example, {results['minutes_per_run']:g} min "
        f"each, {results['schedule']}, one thread each",
        "",
        f"Tiny-shakespeare words (lowercased), {data['train']['tokens']:,} / {data['valid']['tokens']:,} / "
        f"{data['test']['tokens']:,} train/valid/test tokens, training words seen < {data['min_count']} times and "
        f"unseen held-out words written <unk> (test <unk> rate {data['test']['unk_rate']:.1%}); vocabulary "
        f"{data['vocabulary']:,}. Both: 2 × 200 LSTM, tied, dropout 0.5, batch 20 × 35. mlxrnn recipe: "
        + ", ".join(f"{k} {v}" for k, v in results["mlxrnn_recipe"].items()) + "; the example: its own (SGD lr 20, "
        "clip 0.25, ÷4 on a stalled epoch, U(±0.1) init).",
        "",
        "| program | test perplexity | epochs | best validation perplexity |",
        "|---|---:|---:|---:|",
        f"| mlxrnn | {ours['test_perplexity']:.2f} | {ours['epochs']:.2f} | {ours['best_val_perplexity']:.2f} |",
        f"| PyTorch example | {theirs['test_perplexity']:.2f} | {theirs['epochs']} | "
        f"{min((c['val_perplexity'] for c in theirs['curve']), default=float('nan')):.2f} |",
        "",
        f"- mlxrnn / example test perplexity at {results['minutes_per_run']:g} minutes: {results['test_ratio']:.3f} "
        f"(target <= 0.9: {'met' if results['test_ratio'] <= 0.9 else 'missed'})",
        "",
        "Validation perplexity at equal epochs:",
        "",
        "| epoch | mlxrnn | PyTorch example |",
        "|---:|---:|---:|",
        *[f"| {epoch} | {mine:.2f} | {other:.2f} |" for epoch, mine, other in results["equal_epochs"]],
        "",
    ]
    for name, run in runs.items():
        lines += [f"{name} (per epoch end):", "", "| minutes | epoch | validation perplexity |", "|---:|---:|---:|"]
        lines += [f"| {c['minutes']:.2f} | {c['epoch'] if c.get('epoch') is not None else '-'} | "
                  f"{c['val_perplexity']:.2f} |" for c in run["curve"] if c.get("minutes") is not None]
        lines += ["", f"command: `{run['command']}`", ""]
    lines += [f"Machine: {results['machine']}", f"Date: {results['date']}"]
    return lines
