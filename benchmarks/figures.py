"""Regenerate the README's figures in docs/figures/ (needs the plot extra: pip install -e ".[plot]").

    python benchmarks/figures.py                 # both figures
    python benchmarks/figures.py --out /tmp/f    # somewhere else

quality_curve.png   the validation curves of benchmarks/results/char_lm_quality_*.json (written
                    by benchmarks/char_lm_quality.py) against wall-clock minutes, with the target.
gradient_flow.png   `mlxrnn gradflow` on fresh 1 × 128 RNN, GRU and LSTM character models, one
                    batch of 16 windows of 50 characters of tiny-shakespeare, seed 0 (NumPy,
                    float32). Deterministic: no timing is involved, so any machine redraws it.
gradient_flow_trained.png   the same after --trained-steps (300) steps of `mlxrnn train` each
                    (seq-len 64, batch 32, lr 4e-3, no dropout; a few minutes on 2 cores), then
                    `mlxrnn gradflow --run`. Step-limited, so also independent of the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
GRADFLOW_SETTINGS = dict(cells=("rnn", "gru", "lstm"), hidden_size=128, num_layers=1, embed_size=64, seq_len=50,
                         batch_size=16, seed=0, backend="numpy")


def shrink(path: Path) -> Path:
    """Re-save a figure with a 128-colour palette: a third of the size, the same picture (line art)."""
    from PIL import Image  # installed with matplotlib

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def quality_figure(out_dir: Path) -> Path:
    from mlxrnn.plot.curves import plot_quality_curves

    files = sorted(RESULTS.glob("char_lm_quality_*.json"))
    if not files:
        raise SystemExit(f"no char_lm_quality_*.json in {RESULTS}: run benchmarks/char_lm_quality.py first")
    results = [json.loads(path.read_text(encoding="utf-8")) for path in files]
    # char_lm_quality_numpy_cosine_25min -> "numpy, cosine, 25 min"
    labels = [", ".join(path.stem.removeprefix("char_lm_quality_").replace("min", " min").split("_"))
              for path in files]
    return shrink(plot_quality_curves(results, labels, out_dir / "quality_curve.png"))


def gradient_flow_figure(out_dir: Path) -> tuple[Path, dict]:
    from mlxrnn.lm.gradflow import compare_fresh_cells
    from mlxrnn.plot.gradflow import plot_gradient_flow
    from mlxrnn.text.corpus import bundled_corpus_path, read_text

    flows = compare_fresh_cells(read_text(bundled_corpus_path()), **GRADFLOW_SETTINGS)
    title = "Gradient of the last step's loss reaching earlier steps: fresh 1 × 128 character models"
    path = shrink(plot_gradient_flow(flows, out_dir / "gradient_flow.png", title=title))
    return path, {cell: flow.median_hidden()[-1][0] for cell, flow in flows.items()}


def trained_gradient_flow_figure(out_dir: Path, steps: int) -> tuple[Path, dict]:
    import tempfile

    from mlxrnn.lm.gradflow import run_gradient_flow
    from mlxrnn.plot.gradflow import plot_gradient_flow
    from mlxrnn.run.loop import TrainOptions, train_language_model
    from mlxrnn.text.corpus import bundled_corpus_path, read_text

    text, s = read_text(bundled_corpus_path()), GRADFLOW_SETTINGS
    flows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for cell in s["cells"]:
            options = TrainOptions(cell=cell, layers=s["num_layers"], hidden=s["hidden_size"], embed=s["embed_size"],
                                   seq_len=64, batch_size=32, lr=4e-3, dropout=0.0, steps=steps, eval_every=steps,
                                   backend=s["backend"], seed=s["seed"])
            train_language_model(options, Path(scratch) / cell)
            flows[cell] = run_gradient_flow(Path(scratch) / cell, text, seq_len=s["seq_len"],
                                            batch_size=s["batch_size"], seed=s["seed"], backend=s["backend"],
                                            tag="last")
    title = f"The same models after {steps} training steps each"
    path = shrink(plot_gradient_flow(flows, out_dir / "gradient_flow_trained.png", title=title))
    return path, {cell: flow.median_hidden()[-1][0] for cell, flow in flows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="folder for the PNGs")
    parser.add_argument("--trained-steps", type=int, default=300,
                        help="training steps per model of the trained gradient-flow figure (0: skip it)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    print(f"wrote {quality_figure(args.out)}")
    path, first_step = gradient_flow_figure(args.out)
    report(path, first_step)
    if args.trained_steps > 0:
        report(*trained_gradient_flow_figure(args.out, args.trained_steps))


def report(path: Path, first_step: dict) -> None:
    shares = ", ".join(f"{cell} {value:.1e}" for cell, value in first_step.items())
    print(f"wrote {path} (median ‖∂loss/∂h⟨0⟩‖, {GRADFLOW_SETTINGS['seq_len'] - 1} steps before the loss: {shares})")


if __name__ == "__main__":
    main()
