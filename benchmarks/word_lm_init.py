"""Short runs behind the initial values of a word model's embedding and output layer.

Each run trains the same 2 × 200 word LSTM (embedding 200, batch 20 × 35) on the benchmark's
word-level tiny-shakespeare files (see ``word_lm_quality.prepare_data``) for a fixed number of
steps, with the same seed, recipe and dropout masks; only the initial values of the embedding
table E (V, E) and, untied, of the output weight W (H, V) differ. Validation perplexity is read
every ``--eval-every`` steps, so the candidates are compared at equal steps, not equal minutes
(the machine's load does not enter the numbers).

Candidates (``--inits``): ``normal`` E ~ N(0, 1) (PyTorch's ``nn.Embedding``, mlxrnn before
issue 24); ``uniform:R`` E ~ U(−R, R); untied runs draw W ~ U(−R, R) too with
``uniform:R:head``, and keep the default U(±1/√H) otherwise.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/word_lm_init.py --recipe sgd --steps 300 --inits normal uniform:0.1 uniform:0.05
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from word_lm_quality import prepare_data

from mlxrnn.run.loop import LanguageModelRun
from mlxrnn.run.options import TrainOptions

MODEL = dict(tokenizer="whitespace", layers=2, hidden=200, embed=200, batch_size=20, seq_len=35, dropout=0.5,
             seed=0, backend="numpy", schedule="none")
#: the PyTorch example's SGD (lr 20, clip 0.25) and mlxrnn's Adam recipe before issue 24
RECIPES = {"sgd": dict(optimizer="sgd", lr=20.0, clip=0.25), "adam": dict(optimizer="adam", lr=2e-3, clip=5.0)}


def draw(init: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One candidate's values of shape ``shape``: "normal" N(0, 1) or "uniform:R" U(−R, R)."""
    if init == "normal":
        return rng.standard_normal(shape)
    radius = float(init.split(":")[1])
    return rng.uniform(-radius, radius, size=shape)


def run(init: str, options: TrainOptions, folder: Path) -> list[dict]:
    """Train with the embedding (and, for "…:head", the untied output weight) drawn by ``init``."""
    curve: list[dict] = []

    def record(r: dict) -> None:
        if r.get("event") == "eval":
            curve.append({"step": r["step"], "val_perplexity": r["val_perplexity"]})

    training = LanguageModelRun(options, folder / init.replace(":", "_"), metrics=record)
    model = training.lm.model
    params = model.numpy_parameters()
    rng = np.random.default_rng(options.seed)
    params["embedding.weight"] = draw(init.replace(":head", ""), params["embedding.weight"].shape, rng)
    if init.endswith(":head") and "head.W" in params:
        params["head.W"] = draw(init.replace(":head", ""), params["head.W"].shape, rng)
    model.load_parameters({k: v.astype(np.float32) for k, v in params.items()})
    training.train()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="sgd")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--no-tie", dest="tie", action="store_false")
    parser.add_argument("--inits", nargs="+", default=["normal", "uniform:0.1"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlxrnn-word-init-"))
    data = prepare_data(work)
    options = TrainOptions(corpus=data["train"], valid=data["valid"], steps=args.steps, eval_every=args.eval_every,
                           tie=args.tie, **MODEL, **RECIPES[args.recipe])
    for init in args.inits:
        curve = run(init, options, work)
        line = {"recipe": args.recipe, "tie": args.tie, "init": init, "curve": curve}
        print(json.dumps(line), flush=True)
        print(f"{args.recipe} tie={args.tie} {init:>16}: " + "  ".join(
            f"{c['step']}: {c['val_perplexity']:.1f}" for c in curve), flush=True)


if __name__ == "__main__":
    main()
