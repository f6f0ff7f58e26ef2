"""Figures and their data: `mlxrnn plot`, `mlxrnn gradflow`, `mlxrnn bench --plot`, the README's figures.

Each figure is checked to be written (a real, non-empty PNG/SVG) and the numbers behind it are
checked against their source: the run's metrics.jsonl records, the library's gradient flow.
Without matplotlib (simulated by making its import fail) each command still prints its summary
and says in one line how to install the extra.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

from mlxrnn.errors import DataError, MissingExtra
from mlxrnn.lm.gradflow import compare_fresh_cells, text_batch
from mlxrnn.plot import require_matplotlib
from mlxrnn.plot.bench import plot_bench_ratios, ratio_rows
from mlxrnn.run.loop import TrainOptions, train_language_model
from mlxrnn.run.metrics import read_run_metrics, unique_names

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(layers=1, hidden=8, embed=4, seq_len=8, batch_size=4, eval_every=3, log_every=1, dropout=0.0,
            backend="numpy")
needs_matplotlib = pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None, reason="matplotlib (the plot extra) is not installed"
)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mlxrnn")


def records(run: Path, event: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, (path, len(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus) -> list[Path]:
    """Two finished tiny runs: an LSTM on the plateau schedule and a GRU on the cosine one, clipped hard."""
    root = tmp_path_factory.mktemp("runs")
    made = []
    for name, extra in (("lstm", {}), ("gru", {"cell": "gru", "schedule": "cosine", "clip": 1e-3})):
        train_language_model(TrainOptions(corpus=str(corpus), steps=7, **TINY, **extra), root / name)
        made.append(root / name)
    return made


# --- reading metrics ---------------------------------------------------------------------------
def test_summary_values_equal_the_logged_metrics(runs):
    run = runs[0]
    summary = read_run_metrics(run).summary()
    train, evals = records(run, "train"), records(run, "eval")
    assert summary["status"] == "finished" and summary["stopped_because"] == "step limit reached"
    assert summary["train_records"] == len(train) == 7 and summary["eval_records"] == len(evals) == 3
    assert summary["last_step"] == 7 and summary["last_train_loss"] == train[-1]["loss"]
    assert summary["grad_norm_median"] == float(np.median([r["grad_norm"] for r in train]))
    assert summary["grad_norm_max"] == max(r["grad_norm"] for r in train)
    assert summary["minutes"] == train[-1]["elapsed"] / 60
    best = min(evals, key=lambda r: r["val_loss"])
    assert summary["best_val_loss"] == best["val_loss"] and summary["best_val_step"] == best["step"]
    assert summary["best_val_bpc"] == best["val_bpc"] and summary["last_val_loss"] == evals[-1]["val_loss"]
    clipped = read_run_metrics(runs[1]).summary()
    assert clipped["clip_rate"] == 1.0 and summary["clip_rate"] == 0.0  # clip 1e-3 clips every step
    assert clipped["lr_last"] < clipped["lr_first"]  # the cosine schedule decays


def test_a_run_still_being_written_is_read(tmp_path, runs):
    live = tmp_path / "live"
    live.mkdir()
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    ended = [line for line in lines if json.loads(line)["event"] != "end"]
    (live / "metrics.jsonl").write_text("\n".join(ended) + '\n{"event": "train", "step": 8, "lo')
    metrics = read_run_metrics(live)
    assert metrics.status == "running" and metrics.skipped_lines == 1 and len(metrics.train["step"]) == 7
    result = invoke("plot", live)
    assert result.exit_code == 0, result.output
    assert "still training" in result.output and "1 unreadable line(s)" in result.output


def test_a_resumed_run_keeps_each_step_once(tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    lines = [{"event": "start", "step": 0, "options": {"level": "char", "clip": 5.0}},
             *({"event": "train", "step": s, "loss": 10.0 - s, "elapsed": s} for s in range(1, 7)),
             {"event": "diverged", "step": 7, "loss": None},
             {"event": "start", "step": 4, "options": {"level": "char", "clip": 1.0}},  # the last good checkpoint
             *({"event": "train", "step": s, "loss": 20.0 - s, "elapsed": s} for s in range(5, 9))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    metrics = read_run_metrics(run)
    assert metrics.train["step"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert metrics.train["loss"].tolist() == [9, 8, 7, 6, 15, 14, 13, 12]
    assert metrics.status == "running" and metrics.clip == 1.0


def test_eval_minutes_come_from_eval_records_or_are_interpolated(tmp_path, runs):
    metrics = read_run_metrics(runs[0])
    np.testing.assert_allclose(metrics.eval_minutes(), [r["elapsed"] / 60 for r in records(runs[0], "eval")])
    old = tmp_path / "old"
    old.mkdir()
    lines = [{"event": "train", "step": 10, "elapsed": 60.0}, {"event": "train", "step": 20, "elapsed": 180.0},
             {"event": "eval", "step": 15, "val_loss": 2.0}]  # written before evals carried a time
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert read_run_metrics(old).eval_minutes().tolist() == [2.0]


def test_missing_or_empty_metrics_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no metrics.jsonl"):
        read_run_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"event": "sta')
    with pytest.raises(DataError, match="holds no metrics yet"):
        read_run_metrics(tmp_path)
    assert unique_names([tmp_path / "a" / "run", tmp_path / "b" / "run"]) == ["a/run", "b/run"]


# --- mlxrnn plot -------------------------------------------------------------------------------
@needs_matplotlib
@pytest.mark.parametrize("suffix,x_axis", [(".png", "step"), (".svg", "minutes")])
def test_plot_writes_the_figure_of_several_runs(tmp_path, runs, suffix, x_axis):
    out = tmp_path / f"curves{suffix}"
    result = invoke("plot", *runs, "--x", x_axis, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "lstm  [finished" in result.output and "gru  [finished" in result.output
    if suffix == ".png":
        assert_png(out)
    else:
        svg = out.read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Validation bits per character" in svg
    assert not list(tmp_path.glob(".tmp-*"))  # written through a temporary file, renamed into place


def test_plot_json_is_the_summary(runs):
    result = invoke("plot", runs[0], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["figure"] is None and data["runs"] == [json.loads(json.dumps(read_run_metrics(runs[0]).summary()))]


def test_plot_without_matplotlib_prints_the_summary_and_the_install_hint(tmp_path, runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(MissingExtra, match=re.escape("pip install 'mlxrnn[plot]'")):
        require_matplotlib()
    out = tmp_path / "curves.png"
    result = invoke("plot", runs[0], "--out", out)
    assert result.exit_code == 1 and not out.exists()
    assert f"validation: best {read_run_metrics(runs[0]).summary()['best_val_loss']:.4f}" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: drawing figures needs matplotlib") and "mlxrnn[plot]" in errors[0]
    plain = invoke("plot", runs[0])  # no --out: the summary, and the hint as a note
    assert plain.exit_code == 0 and "pip install 'mlxrnn[plot]'" in plain.stdout


@pytest.mark.parametrize("out,code,message", [("curves.jpg", 2, "--out must end in .png, .svg, .pdf"),
                                               ("nowhere/curves.png", 1, "does not exist")])
def test_plot_refuses_a_bad_out_before_reading(tmp_path, runs, out, code, message):
    result = invoke("plot", runs[0], "--out", tmp_path / out)
    assert result.exit_code == code and message in result.stderr and "Traceback" not in result.output


# --- mlxrnn gradflow ---------------------------------------------------------------------------
GRADFLOW_FLAGS = ["--hidden", "6", "--embed", "4", "--seq-len", "12", "--batch-size", "3", "--backend", "numpy"]


@needs_matplotlib
def test_gradflow_json_and_figure_are_the_library_numbers(tmp_path, corpus):
    out = tmp_path / "gradflow.png"
    result = invoke("gradflow", "--text", corpus, *GRADFLOW_FLAGS, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert_png(out)
    data = json.loads(result.output)
    assert data["figure"] == str(out) and list(data["models"]) == ["rnn", "gru", "lstm"]
    flows = compare_fresh_cells(corpus.read_text(), hidden_size=6, embed_size=4, seq_len=12, batch_size=3,
                                backend="numpy")
    for cell, flow in flows.items():
        model = data["models"][cell]
        np.testing.assert_allclose(model["hidden_grad_norm"], flow.median_hidden(), rtol=1e-12)
        np.testing.assert_allclose(model["input_grad_norm"], flow.median_input(), rtol=1e-12)
        assert set(model["gate_saturation"]) == set(flow.saturation) and model["time_steps"] == 12
    # the vanilla RNN's gradient vanishes fastest, as the notes argue
    assert data["models"]["rnn"]["first_over_last"] < data["models"]["lstm"]["first_over_last"]


def test_gradflow_table_and_trained_runs(runs, corpus):
    result = invoke("gradflow", "--text", corpus, *GRADFLOW_FLAGS, "--cells", "rnn,lstm")
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    assert table[0].split()[-1] == "11" and table[1].startswith("rnn") and "‖∂h‖" in table[1]
    flows = compare_fresh_cells(corpus.read_text(), cells=("rnn",), hidden_size=6, embed_size=4, seq_len=12,
                                batch_size=3, backend="numpy")
    assert table[1].split()[2] == f"{flows['rnn'].median_hidden()[-1][-1]:.2e}"  # 0 steps before the loss
    trained = invoke("gradflow", "--run", runs[0], "--run", runs[1], "--text", corpus, "--seq-len", "6", "--json")
    assert trained.exit_code == 0, trained.output
    assert list(json.loads(trained.output)["models"]) == ["lstm (lstm)", "gru (gru)"]


def test_gradflow_bad_input_is_one_line(tmp_path, corpus):
    bad_cell = invoke("gradflow", "--cells", "rnn,transformer", "--text", corpus)
    assert bad_cell.exit_code == 2 and "--cells takes" in bad_cell.stderr
    short = tmp_path / "short.txt"
    short.write_text("abc")
    too_short = invoke("gradflow", "--text", short, "--seq-len", "5", "--backend", "numpy")
    assert too_short.exit_code == 1 and "too few for one window" in too_short.stderr
    inputs, targets = text_batch(np.arange(20), batch_size=4, seq_len=5, seed=1)
    np.testing.assert_array_equal(targets, inputs + 1)


# --- mlxrnn bench --plot -----------------------------------------------------------------------
def _report() -> dict:
    rows = []
    for task, ratio in (("train", 0.8), ("sample", 5.0)):
        for cell in ("lstm", "gru"):
            rows.append({"impl": "numpy", "cell": cell, "size": "ref", "task": task, "ratio": ratio,
                         "ratio_min": ratio * 0.9, "ratio_max": ratio * 1.1})
            rows.append({"impl": "torch", "cell": cell, "size": "ref", "task": task, "ratio": 1.0,
                         "ratio_min": 0.9, "ratio_max": 1.1})
    return {"settings": {"baseline": "torch"}, "results": rows, "machine": {"cpu": "test", "cores": 2}}


@needs_matplotlib
def test_bench_plot_draws_the_ratios(tmp_path, monkeypatch):
    import mlxrnn_cli.bench as bench_cli

    report = _report()
    assert [r["impl"] for r in ratio_rows(report)] == ["numpy"] * 4  # the baseline's own 1s are not bars
    monkeypatch.setattr(bench_cli, "run_benchmarks", lambda settings, progress=None: report)
    monkeypatch.setattr(bench_cli, "format_table", lambda report, markdown=False: "table")
    monkeypatch.setattr(bench_cli, "format_summary", lambda report: "summary")
    out = tmp_path / "ratios.svg"
    result = invoke("bench", "--quiet", "--plot", out)
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert "training step" in svg and "sampling at batch 1" in svg and "Speed relative to torch" in svg
    with pytest.raises(DataError, match="no ratios"):
        plot_bench_ratios({"settings": {"baseline": None}, "results": []}, tmp_path / "none.png")


# --- the README's figures ----------------------------------------------------------------------
def test_readme_shows_the_committed_figures():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("quality_curve.png", "gradient_flow.png", "gradient_flow_trained.png"):
        assert f"docs/figures/{name}" in readme
        assert_png(ROOT / "docs" / "figures" / name)
    assert "python benchmarks/figures.py" in readme


@needs_matplotlib
def test_figures_script_regenerates_them(tmp_path):
    script = [sys.executable, str(ROOT / "benchmarks" / "figures.py"), "--out", str(tmp_path), "--trained-steps", "1"]
    result = subprocess.run(script, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for name in ("quality_curve.png", "gradient_flow.png", "gradient_flow_trained.png"):
        assert_png(tmp_path / name)
    rnn = float(re.search(r"rnn ([0-9.e+-]+)", result.stdout).group(1))
    lstm = float(re.search(r"lstm ([0-9.e+-]+)", result.stdout).group(1))
    assert rnn < 1e-9 < lstm and not math.isnan(rnn)  # what the README's sentence says


def test_nothing_imports_matplotlib_until_a_figure_is_drawn():
    code = ("import sys, mlxrnn, mlxrnn.plot, mlxrnn.plot.curves, mlxrnn.plot.gradflow, mlxrnn.plot.bench, "
            "mlxrnn.run.metrics, mlxrnn.lm.gradflow, mlxrnn_cli.main; sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
