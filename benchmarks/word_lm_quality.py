"""Quality benchmark: a word-level LSTM language model on tiny-shakespeare, mlxrnn against a
PyTorch CPU peer trained the same way, one after the other, for the same wall-clock budget.

Data: the bundled tiny-shakespeare, lowercased and split by mlxrnn's word tokenizer (words,
punctuation marks, clitics such as 's kept whole), written pre-tokenized (tokens separated by
spaces, one line per line) and split 90/10 by tokens at a line boundary into train.txt and
valid.txt. Both runs read those files with the whitespace tokenizer, build the vocabulary from
the training part with the same function (words seen only in validation are <UNK>) and batch
them the same way: 20 parallel streams, windows of 35 steps, the hidden state carried from
window to window (truncated BPTT), reset at each epoch.

Model and training (identical in both): 2 × 200 LSTM, embedding 200, Adam 2e-3, gradient norm
clipped at 5, evaluated every --eval-every steps on the whole validation text (state carried
across windows), the same regularisation (dropout on the embedding output, between the layers
and before the output layer, per step or locked; tied input and output embeddings) and the same
learning-rate schedule object (mlxrnn's plateau schedule with its defaults, applied to the
peer's optimizer). The peer starts from mlxrnn's initial weights (converted with
mlxrnn.io.interop.to_torch); only the dropout masks' random streams differ.

--baseline adds a third run: mlxrnn with the settings a word model had before issue 13 (dropout
0.2 between layers only, no tying, plateau decay at every stalled evaluation without a floor)
on the same files and tokens, the "better than mlxrnn today" comparison.

    python benchmarks/word_lm_quality.py --baseline           # 3 × 10 minutes: the reportable run
    python benchmarks/word_lm_quality.py --baseline --threads 1   # both on one core
    python benchmarks/word_lm_quality.py --minutes 0.3 --results-dir /tmp/wlq   # does it run?

Run it on a quiet machine: with other jobs on the cores, OpenBLAS's threads wait for each other
in every small product of the time loop (a word-model step took 6× longer with 2 threads than
with 1 on a loaded 2-core machine), which says nothing about either library.

Target (issue 13): mlxrnn's best validation perplexity <= 0.9 × the peer's, and below the
baseline's. Writes benchmarks/results/word_lm_quality_<minutes>min.{json,md}.

--pytorch-example PATH races the real peer instead (issue 24, :mod:`word_lm_peer`): PyTorch's
``word_language_model/main.py`` from a pytorch/examples checkout, run unchanged with its own
initialisation and recipe, against ``mlxrnn train`` with a README word recipe (``--recipe sgd`` or
``adam``), on train/valid/test files with rare and unseen words written <unk>, one thread each,
one after the other (``--at-once``: both at once). It reports the test perplexity of both at
equal minutes and the validation perplexity at every epoch end, and writes
benchmarks/results/word_lm_race_<minutes>min.{json,md}:

    git clone https://github.com/pytorch/examples /tmp/pytorch-examples
    python benchmarks/word_lm_quality.py --pytorch-example /tmp/pytorch-examples/word_language_model/main.py
    python benchmarks/word_lm_quality.py --pytorch-example PATH --minutes 0.5 --train-lines 1500 \
        --results-dir /tmp/race          # a smoke test: short epochs, so each finishes one
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlxrnn.lm.evaluation import perplexity, unknown_rate
from mlxrnn.lm.initialisation import initial_range
from mlxrnn.lm.model import language_model_config
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.nn.schedules import make_schedule
from mlxrnn.run.data import build_vocabulary, make_batchers
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.corpus import bundled_corpus_path
from mlxrnn.text.tokenizers import WordTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script, also when loaded by path
from word_lm_peer import race, race_report  # noqa: E402

HERE = Path(__file__).resolve().parent
#: the issue's configuration (TrainOptions fields)
MODEL = dict(tokenizer="whitespace", layers=2, hidden=200, embed=200, batch_size=20, seq_len=35, lr=2e-3, clip=5.0,
             optimizer="adam", schedule="plateau", seed=0)
#: a word model's settings before issue 13: dropout between layers only, decay at every stall, no floor
BASELINE = dict(dropout=0.2, embed_dropout=0.0, output_dropout=0.0, locked_dropout=False, tie=False,
                decay_patience=1, min_lr=0.0, at_min_lr="continue")
#: mlxrnn's word recipes in the race, exactly README's "Word models" flags: the rate divided by 4
#: after an epoch whose validation did not improve, as the example anneals (floor: lr / 100)
WORD_RECIPES = {
    "sgd": dict(optimizer="sgd", lr=20.0, clip=0.25, lr_decay=0.25, decay_patience=1, eval_every="epoch"),
    "adam": dict(optimizer="adam", lr=2e-3, clip=5.0, lr_decay=0.25, decay_patience=1, eval_every="epoch"),
}


def prepare_data(folder: Path) -> dict:
    """Write train.txt and valid.txt (pre-tokenized, lowercased tiny-shakespeare, 90/10 by tokens)."""
    tokenizer = WordTokenizer(lowercase=True, unk_token=None)
    lines = [tokenizer.tokenize(line)[:-1] for line in bundled_corpus_path().read_text(encoding="utf-8").split("\n")]
    lines = [" ".join(words) for words in lines if words]
    counts = np.cumsum([len(line.split()) + 1 for line in lines])  # + 1: the <EOS> each line ends with
    cut = int(np.searchsorted(counts, 0.9 * counts[-1])) + 1
    paths = {"train": folder / "train.txt", "valid": folder / "valid.txt"}
    paths["train"].write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    paths["valid"].write_text("\n".join(lines[cut:]) + "\n", encoding="utf-8")
    return {"train": str(paths["train"]), "valid": str(paths["valid"]), "train_tokens": int(counts[cut - 1]),
            "valid_tokens": int(counts[-1] - counts[cut - 1])}


def flags(settings: dict) -> list[str]:
    """`mlxrnn train` flags of TrainOptions fields (each field's flag is its name with dashes)."""
    out = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out += [flag] if value else []
        else:
            out += [flag, str(value)]
    return out


def thread_env(threads: int | None) -> dict:
    """The environment that gives NumPy's BLAS ``threads`` threads (None: the libraries' defaults)."""
    if threads is None:
        return dict(os.environ)
    return {**os.environ, **{name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                               "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}


def run_mlxrnn(settings: dict, run_dir: Path, threads: int | None = None) -> dict:
    command = [sys.executable, "-m", "mlxrnn_cli.main", "train", settings["corpus"],
               *flags({k: v for k, v in settings.items() if k != "corpus"}),
               "--out", str(run_dir), "--sample-length", "0", "--quiet", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=thread_env(threads))
    if result.returncode != 0:
        sys.exit(f"mlxrnn train failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    summary = json.loads(result.stdout)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed"] for r in records if r["event"] == "train"}
    per_epoch = next(r["steps_per_epoch"] for r in records if r["event"] == "start")
    curve = []
    for r in (r for r in records if r["event"] == "eval"):
        nearest = max((s for s in elapsed if s <= r["step"]), default=None)
        curve.append({"step": r["step"], "minutes": None if nearest is None else elapsed[nearest] / 60,
                      "epoch": r["step"] // per_epoch if r["step"] % per_epoch == 0 else None,  # an epoch's end
                      "val_loss": r["val_loss"], "val_perplexity": r["val_perplexity"], "lr": r["lr"]})
    return {"best_val_loss": summary["best_val_loss"], "best_val_perplexity": summary["best_val_perplexity"],
            "test_perplexity": summary.get("test_perplexity"),
            "steps": summary["steps"], "epochs": summary["epochs_completed"],
            "tokens_per_second": summary["tokens_per_second"], "stopped_because": summary["stopped_because"],
            "curve": curve, "command": "mlxrnn " + " ".join(command[3:])}


def run_torch(settings: dict, threads: int | None = None) -> dict:
    """The PyTorch peer: the same data, batches, initial weights, regularisation and schedule."""
    import torch

    from mlxrnn.io.interop import to_torch

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(settings["seed"])
    options = TrainOptions(**settings).validate()
    train_text, valid_text = (Path(p).read_text(encoding="utf-8") for p in (options.corpus, options.valid))
    tokenizer, vocab, tokens = build_vocabulary(options, train_text, valid_text)
    ids, val_ids = vocab.encode(tokens), vocab.encode(tokenizer.tokenize(valid_text))
    train_batches, val_batches = make_batchers(options, ids, val_ids=val_ids)
    range_ = initial_range(options.level)
    config = language_model_config(len(vocab), **options.model_settings(), embed_init_range=range_)
    reference = SequenceModel(config, backend="numpy")  # what `mlxrnn train` starts from
    model = PeerLM(len(vocab), options)
    model.load_from(reference, to_torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    schedule = make_schedule(options.schedule, options.lr, decay=options.lr_decay, patience=options.decay_patience,
                             min_lr=options.min_lr, at_floor=options.at_min_lr, warmup=options.warmup)
    rate = argparse.Namespace(lr=options.lr)  # what mlxrnn's schedules set; copied into torch's optimizer
    budget, step, window, state, tokens_run, curve, best = options.minutes * 60, 0, 0, None, 0, [], None
    reason, started = "time budget reached", time.perf_counter()

    def evaluate() -> float:
        model.eval()
        total, count, carry = 0.0, 0, None
        with torch.no_grad():
            for inputs, targets in val_batches:
                logits, carry = model(torch.from_numpy(inputs.astype(np.int64)), carry)
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets.astype(np.int64)).reshape(-1),
                    reduction="sum"))
                count += targets.size
        model.train()
        return total / count

    while True:
        run_time = time.perf_counter() - started
        if run_time >= budget:
            break
        schedule.before_step(rate, run_time / budget)
        for group in optimizer.param_groups:
            group["lr"] = rate.lr
        inputs, targets = train_batches.window(window)
        logits, state = model(torch.from_numpy(inputs.astype(np.int64)), state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.from_numpy(targets.astype(np.int64)).reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.clip)
        optimizer.step()
        state = [tuple(part.detach() for part in layer) for layer in state]  # truncated BPTT: carry, no gradient
        step, window, tokens_run = step + 1, window + 1, tokens_run + targets.size
        if window >= len(train_batches):
            window, state = 0, None
        if step % options.eval_every == 0:
            val = evaluate()
            best = val if best is None else min(best, val)
            schedule.after_evaluation(rate, val)
            curve.append({"step": step, "minutes": (time.perf_counter() - started) / 60, "val_loss": val,
                          "val_perplexity": perplexity(val), "lr": rate.lr})
            if getattr(schedule, "exhausted", False):
                reason = "learning rate at its floor min_lr and validation stalled"
                break
    elapsed = time.perf_counter() - started
    if not curve or curve[-1]["step"] != step:
        val = evaluate()
        best = val if best is None else min(best, val)
        curve.append({"step": step, "minutes": elapsed / 60, "val_loss": val, "val_perplexity": perplexity(val),
                      "lr": rate.lr})
    return {"best_val_loss": best, "best_val_perplexity": perplexity(best), "steps": step,
            "epochs": step / len(train_batches), "tokens_per_second": tokens_run / elapsed, "stopped_because": reason,
            "curve": curve, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "valid_oov_rate": unknown_rate(tokenizer.tokenize(valid_text), vocab)[1], "vocab_size": len(vocab)}


def _peer_class():
    import torch

    class Peer(torch.nn.Module):
        """embedding → dropout → LSTM stack (dropout between layers) → dropout → linear (tied or not)."""

        def __init__(self, vocab_size: int, options: TrainOptions):
            super().__init__()
            self.options = options
            self.embedding = torch.nn.Embedding(vocab_size, options.embed)
            sizes = [options.embed] + [options.hidden] * (options.layers - 1)
            if options.locked_dropout:  # masks shared across time between layers: one module per layer
                self.layers = torch.nn.ModuleList(torch.nn.LSTM(n, options.hidden, batch_first=True) for n in sizes)
            else:  # PyTorch's own multi-layer LSTM with its (per-step) inter-layer dropout: its fastest path
                self.layers = torch.nn.ModuleList([torch.nn.LSTM(options.embed, options.hidden, options.layers,
                                                                 batch_first=True, dropout=options.dropout)])
            self.head = torch.nn.Linear(options.hidden, vocab_size)
            if options.tie:
                self.head.weight = self.embedding.weight

        def drop(self, x, p: float):
            if not self.training or p == 0:
                return x
            if not self.options.locked_dropout:
                return torch.nn.functional.dropout(x, p, True)
            return x * (x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p))  # one mask per sequence

        def forward(self, ids, state):
            x, new_state = self.drop(self.embedding(ids), self.options.embed_dropout), []
            for index, lstm in enumerate(self.layers):
                x, layer_state = lstm(x, None if state is None else state[index])
                new_state.append(layer_state)
                if index < len(self.layers) - 1:
                    x = self.drop(x, self.options.dropout)
            return self.head(self.drop(x, self.options.output_dropout)), new_state

        def load_from(self, reference: SequenceModel, to_torch) -> None:
            """mlxrnn's initial weights: the same starting point for both runs."""
            params, lstm = reference.numpy_parameters(), to_torch(reference.rnn)
            weights = {"embedding.weight": params["embedding.weight"], "head.bias": params["head.b"]}
            # Tied: the head's weight is the embedding (the state dict lists the shared tensor twice).
            weights["head.weight"] = params["embedding.weight"] if self.options.tie else params["head.W"].T
            for name, value in lstm.items():
                if len(self.layers) == 1:
                    weights[f"layers.0.{name}"] = value
                else:  # one single-layer module per layer: weight_ih_l1 → layers.1.weight_ih_l0
                    stem, layer = name.rsplit("_l", 1)
                    weights[f"layers.{layer}.{stem}_l0"] = value
            self.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                                  for k, v in weights.items()}, strict=True)

    return Peer


def PeerLM(vocab_size: int, options: TrainOptions):  # noqa: N802 (a class built once torch is imported)
    return _peer_class()(vocab_size, options)


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import mlxrnn

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "mlxrnn": mlxrnn.__version__, "platform": f"{platform.system()} {platform.machine()}",
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def report(results: dict, args: argparse.Namespace) -> list[str]:
    runs = results["runs"]
    lines = [
        f"# Word LM quality: tiny-shakespeare words, {args.minutes:g} min per run",
        "",
        f"{results['data']['train_tokens']:,} training and {results['data']['valid_tokens']:,} validation tokens "
        f"(whitespace tokens of the lowercased, word-tokenized text, <EOS> included); vocabulary "
        f"{results['vocab_size']:,} from the training part; validation OOV rate {results['valid_oov_rate']:.2%}. "
        "2 × 200 LSTM, embedding 200, batch 20 × 35 steps, Adam 2e-3, clip 5; "
        f"regularisation {results['regularisation']}.",
        "",
        "| run | best validation perplexity | best loss | steps | epochs | tokens/s | stopped because |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['best_val_perplexity']:.2f} | {run['best_val_loss']:.4f} | {run['steps']} | "
                     f"{run['epochs']:.2f} | {run['tokens_per_second']:,.0f} | {run['stopped_because']} |")
    lines.append("")
    for verdict in results["verdicts"]:
        lines.append(f"- {verdict}")
    for name, run in runs.items():
        lines += ["", f"{name}:", "", "| minutes | step | validation perplexity | lr |", "|---:|---:|---:|---:|"]
        lines += [f"| {c['minutes']:.1f} | {c['step']} | {c['val_perplexity']:.2f} | {c['lr']:.3g} |"
                  for c in run["curve"] if c["minutes"] is not None]
    lines += ["", f"Machine: {results['machine']}", f"Date: {results['date']}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of each run")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--dropout", type=float, default=0.5, help="at the embedding, between layers, before the head")
    parser.add_argument("--locked", action="store_true", help="locked (variational) dropout masks in both runs")
    parser.add_argument("--no-tie", dest="tie", action="store_false", help="untied input and output embeddings")
    parser.add_argument("--baseline", action="store_true", help="also run mlxrnn with the pre-issue-13 settings")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads of mlxrnn (OPENBLAS_NUM_THREADS) and torch.set_num_threads for the peer "
                             "(default: each library's own)")
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    race_flags = parser.add_argument_group("the race against the real PyTorch example (word_lm_peer.py)")
    race_flags.add_argument("--pytorch-example", metavar="MAIN_PY",
                            help="word_language_model/main.py of a pytorch/examples checkout: race it, run unchanged, "
                                 "against mlxrnn's word recipe on the same <unk>-written files (one thread each)")
    race_flags.add_argument("--recipe", choices=tuple(WORD_RECIPES), default="sgd", help="mlxrnn's recipe in the race")
    race_flags.add_argument("--at-once", action="store_true", help="run both at once (default: one after the other)")
    race_flags.add_argument("--min-count", type=int, default=2, help="training words seen fewer times become <unk>")
    race_flags.add_argument("--train-lines", type=int, default=None, help="keep this many training lines (smoke tests)")
    args = parser.parse_args()
    if args.pytorch_example:
        results = race(args, run_mlxrnn, machine(), WORD_RECIPES[args.recipe])
        out = Path(args.results_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = f"word_lm_race_{args.minutes:g}min"
        (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        lines = race_report(results)
        (out / f"{name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    work = Path(tempfile.mkdtemp(prefix="mlxrnn-word-lm-"))
    data = prepare_data(work)
    common = dict(corpus=data["train"], valid=data["valid"], **MODEL, minutes=args.minutes,
                  eval_every=args.eval_every, backend=args.backend)
    regularised = dict(common, dropout=args.dropout, locked_dropout=args.locked, tie=args.tie)
    runs = {"mlxrnn": run_mlxrnn(regularised, work / "mlxrnn", args.threads)}
    peer = run_torch({**regularised, "backend": "numpy"}, args.threads)
    runs["pytorch"] = {k: v for k, v in peer.items() if k not in ("valid_oov_rate", "vocab_size")}
    if args.baseline:
        runs["mlxrnn-baseline"] = run_mlxrnn(dict(common, **BASELINE), work / "baseline", args.threads)
    ratio = runs["mlxrnn"]["best_val_perplexity"] / runs["pytorch"]["best_val_perplexity"]
    verdicts = [f"mlxrnn / PyTorch best validation perplexity: {ratio:.3f} (target <= 0.9: "
                f"{'met' if ratio <= 0.9 else 'missed'})"]
    if args.baseline:
        gain = runs["mlxrnn"]["best_val_perplexity"] / runs["mlxrnn-baseline"]["best_val_perplexity"]
        verdicts.append(f"mlxrnn / mlxrnn with the pre-issue-13 settings: {gain:.3f} (target < 1: "
                        f"{'met' if gain < 1 else 'missed'})")
    kind = "locked" if args.locked else "per-step"
    results = {
        "benchmark": "word_lm_quality", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "data": {k: v for k, v in data.items() if k.endswith("tokens")}, "vocab_size": peer["vocab_size"],
        "valid_oov_rate": peer["valid_oov_rate"], "minutes_per_run": args.minutes, "eval_every": args.eval_every,
        "threads": args.threads,
        "regularisation": f"dropout {args.dropout:g} ({kind} masks) at the embedding, between layers and before the "
                          f"head{', tied embeddings' if args.tie else ''}",
        "settings": {"model": MODEL, "regularised": {k: regularised[k] for k in ("dropout", "locked_dropout", "tie")},
                     "baseline": BASELINE},
        "runs": runs, "verdicts": verdicts,
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"word_lm_quality_{args.minutes:g}min"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = report(results, args)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
