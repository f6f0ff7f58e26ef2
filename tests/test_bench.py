"""The benchmark machinery and the fast paths it measures (speed itself is never asserted).

* ``mlxrnn bench`` runs end to end in a subprocess on a tiny shape and prints valid JSON.
* The batch-1 sampling path (``Recurrent.step`` from a projected embedding table) gives the
  same probabilities, states and tokens as the full forward.
* ``TokenInputs`` (the embedding folded into layer 0) gives the same outputs and gradients as
  materialising the lookup, on every backend here.
* The NumPy training step stays float32 and its time loop stays in the batch-fastest layout.
* On MLX, graph nodes are counted (a fused kernel once), compiled steps evaluate fewer of them
  than eager ones, and the report names the device MLX ran on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mlxrnn
from mlxrnn import Adam, SequenceModel, SequenceModelConfig, Trainer, make_recurrent
from mlxrnn.bench.harness import BenchSettings, _add_ratios, split_list
from mlxrnn.bench.sizes import gemm_flops, parse_size
from mlxrnn.bench.workloads import sample_tokens
from mlxrnn.errors import ConfigError
from mlxrnn.nn.cells import CELLS
from mlxrnn.nn.layers import TokenInputs
from mlxrnn.testing import available_backends

from .test_gradients import CELL_VARIANTS, VARIANT_IDS

HAS_TORCH = __import__("importlib").util.find_spec("torch") is not None


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "mlxrnn_cli.main", "bench", *args],
                            capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0 and "No module named mlxrnn_cli" in result.stderr:
        pytest.skip("mlxrnn_cli is not installed (pip install -e .)")
    return result


def test_cli_bench_tiny_json_has_every_field():
    result = _run_cli("--sizes", "tiny", "--repeats", "1", "--warmup", "0", "--sample-tokens", "5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"machine", "sgemm_1024_gflops", "settings", "results", "notes"} <= report.keys()
    assert {"cpu", "cores", "numpy", "mlxrnn", "python"} <= report["machine"].keys()
    assert report["sgemm_1024_gflops"] > 0
    rows = report["results"]
    assert {(r["cell"], r["task"]) for r in rows} == {(c, t) for c in CELLS for t in ("train", "forward", "sample")}
    for row in rows:
        assert row["impl"] == "numpy" and row["size"] == "tiny" and len(row["seconds"]) == 1
        assert row["tokens_per_s_min"] <= row["tokens_per_s"] <= row["tokens_per_s_max"]
        assert row["peak_rss_mb"] >= row["setup_rss_mb"] > 0
        assert ("fraction_of_sgemm_peak" in row) == (row["task"] != "sample")
    assert f"[{len(CELLS)}/{len(CELLS)}] numpy {list(CELLS)[-1]} tiny" in result.stderr  # the progress lines


def assert_ratios_divide_by_the_baseline(rows: list[dict], baseline: str, impl: str) -> None:
    """Every row's ratios, recomputed from the rows themselves: tokens/s ÷ the baseline's on the
    same (cell, size, task); min ÷ max and max ÷ min of the spreads; peak memory ÷ the baseline's."""
    base = {(r["cell"], r["size"], r["task"]): r for r in rows if r["impl"] == baseline}
    others = [r for r in rows if r["impl"] == impl]
    assert base and others and len(others) == len(base)
    for row in others:
        ref = base[(row["cell"], row["size"], row["task"])]
        assert row["ratio"] == pytest.approx(row["tokens_per_s"] / ref["tokens_per_s"], rel=1e-12)
        assert row["ratio_min"] == pytest.approx(row["tokens_per_s_min"] / ref["tokens_per_s_max"], rel=1e-12)
        assert row["ratio_max"] == pytest.approx(row["tokens_per_s_max"] / ref["tokens_per_s_min"], rel=1e-12)
        assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
        assert row["memory_ratio"] == pytest.approx(row["peak_rss_mb"] / ref["peak_rss_mb"], rel=1e-12)
    for ref in base.values():
        assert ref["ratio"] == 1.0


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_cli_bench_peers_table_has_ratios_to_torch(tmp_path):
    report_path = tmp_path / "report.json"
    result = _run_cli("--sizes", "B=2,T=3,E=4,H=5,V=7", "--cells", "gru", "--tasks", "train,sample",
                      "--repeats", "1", "--warmup", "0", "--sample-tokens", "3", "--peers", "--output", str(report_path))
    assert result.returncode == 0, result.stderr
    table = result.stdout
    assert "× torch" in table and "torch" in table and "numpy" in table
    assert "mlx.nn is the peer of the mlx backend" in table  # no mlx backend asked for: noted, not run
    report = json.loads(report_path.read_text())
    assert report["settings"]["baseline"] == "torch"  # the default when torch is measured
    assert_ratios_divide_by_the_baseline(report["results"], "torch", "numpy")
    for row in report["results"]:  # the table prints the same ratios
        if row["impl"] == "numpy":
            assert f"{row['ratio']:.2f}" in table and f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}" in table


def test_ratios_divide_each_implementation_by_the_baseline():
    """The ratio arithmetic on rows of two implementations (made-up rates; no timing involved)."""
    rows = []
    for impl, rate in (("numpy", 1000.0), ("torch", 250.0)):
        for task, factor in (("train", 1.0), ("sample", 3.0)):
            rows.append({"impl": impl, "cell": "gru", "size": "tiny", "task": task, "tokens_per_s": rate * factor,
                         "tokens_per_s_min": 0.9 * rate * factor, "tokens_per_s_max": 1.2 * rate * factor,
                         "peak_rss_mb": 100.0 if impl == "numpy" else 400.0})
    _add_ratios(rows, "torch")
    numpy_train = rows[0]
    assert numpy_train["ratio"] == pytest.approx(4.0)  # numpy draws 4x torch's tokens per second
    assert numpy_train["ratio_min"] == pytest.approx(900.0 / 300.0)
    assert numpy_train["ratio_max"] == pytest.approx(1200.0 / 225.0)
    assert numpy_train["memory_ratio"] == pytest.approx(0.25)
    assert_ratios_divide_by_the_baseline(rows, "torch", "numpy")


@pytest.mark.parametrize("args,message", [
    (("--cells", "lstm,tcn"), "unknown cell 'tcn'"),
    (("--sizes", "huge"), "unknown size 'huge'"),
    (("--sizes", "H=0"), "bad size item 'H=0'"),
    (("--backends", "cuda"), "unknown implementation 'cuda'"),
    (("--baseline", "jax"), "unknown baseline 'jax'"),
])
def test_cli_bench_errors_are_one_line(args, message):
    result = _run_cli(*args)  # settings are validated before anything runs
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr and "Traceback" not in result.stderr


def test_settings_helpers():
    assert split_list(["lstm,gru", " rnn "]) == ["lstm", "gru", "rnn"]
    name, shape = parse_size("H=512,L=2")
    assert (shape.hidden, shape.layers, shape.batch) == (512, 2, 32) and name == "H=512,L=2"
    with pytest.raises(ConfigError, match="repeats"):
        BenchSettings(repeats=0).validate()
    # the reference LSTM step: 5.0 GFLOP of GEMMs, forward a third of it
    assert gemm_flops("lstm", parse_size("ref")[1], "train") == pytest.approx(5.04e9, rel=0.01)
    assert gemm_flops("lstm", parse_size("ref")[1], "forward") == pytest.approx(1.68e9, rel=0.01)


# --- the sampling fast path -----------------------------------------------------------------------------


def _lm(cell, options, backend, num_layers=2, dtype="float32"):
    config = SequenceModelConfig(input_size=11, embed_size=6, hidden_size=8, num_layers=num_layers, output_size=11,
                                 cell=cell, cell_options=options, seed=3)
    return SequenceModel(config, backend=backend, dtype=dtype)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_step_matches_the_full_forward(cell, options, backend):
    model = _lm(cell, options, backend)
    xp = model.xp
    ids = np.random.default_rng(0).integers(0, 11, (2, 7))
    logits, final_state, _ = model.forward(ids)
    table = model.rnn.project_inputs(model.embedding.params["weight"])
    state = None
    for t in range(ids.shape[1]):
        # half the steps from the projected table, half from embedded inputs: both entry points
        if t % 2:
            h, state = model.rnn.step(x_proj=xp.take(table, xp.from_numpy(ids[:, t]), axis=0), state=state)
        else:
            embedded, _ = model.embedding.forward(ids[:, t:t + 1], as_tokens=False)  # (B, 1, E): a plain lookup
            h, state = model.rnn.step(x=embedded[:, 0], state=state)
        step_logits = xp.to_numpy(xp.matmul(h, model.head.params["W"]) + model.head.params["b"])
        np.testing.assert_allclose(_softmax(step_logits), _softmax(xp.to_numpy(logits)[:, t]), rtol=1e-5, atol=1e-6)
    for a, b in zip(np.atleast_1d(state) if model.rnn.state_size == 1 else state,
                    np.atleast_1d(final_state) if model.rnn.state_size == 1 else final_state):
        np.testing.assert_allclose(xp.to_numpy(a), xp.to_numpy(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell,options", [CELL_VARIANTS[0], CELL_VARIANTS[3], CELL_VARIANTS[6]],
                         ids=[VARIANT_IDS[0], VARIANT_IDS[3], VARIANT_IDS[6]])
def test_sampled_tokens_match_sampling_with_the_full_forward(cell, options):
    model = _lm(cell, options, "numpy", dtype="float64")
    fast = sample_tokens(model, 40, np.random.default_rng(9))
    noise = np.random.default_rng(9).gumbel(size=(40, 11))  # the same Gumbel-max draws, by the full forward
    token, state, slow = 0, None, []
    for i in range(40):
        logits, state, _ = model.forward(np.array([[token]]), initial_state=state)
        token = int(np.argmax(logits[0, -1] + noise[i]))
        slow.append(token)
    assert fast == slow and len(set(fast)) > 3


def test_step_refuses_bidirectional_and_ambiguous_inputs():
    layer = make_recurrent("gru", 3, 4, bidirectional=True, backend="numpy")
    with pytest.raises(ConfigError, match="bidirectional"):
        layer.step(x=np.zeros((1, 3), np.float32))
    layer = make_recurrent("gru", 3, 4, backend="numpy")
    with pytest.raises(ConfigError, match="exactly one"):
        layer.step()


# --- the folded embedding -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_token_inputs_fold_matches_the_materialised_lookup(cell, options, backend):
    dtype = "float64" if backend == "numpy" else "float32"
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-4, "atol": 2e-5}
    layer = make_recurrent(cell, 5, 6, num_layers=2, bidirectional=True, backend=backend, dtype=dtype, seed=1,
                           **options)
    xp, rng = layer.xp, np.random.default_rng(4)
    table_np, ids, lengths = rng.normal(size=(7, 5)), rng.integers(0, 7, (3, 4)), np.array([4, 2, 3])
    out_ref, state_ref, cache = layer.forward(table_np[ids], lengths=lengths)
    d_out = xp.from_numpy(rng.normal(size=tuple(out_ref.shape)))
    dx_ref, _, grads_ref = layer.backward(d_out, None, cache)
    d_table_ref = np.zeros((7, 5))
    np.add.at(d_table_ref, ids.reshape(-1), xp.to_numpy(dx_ref).reshape(-1, 5))
    for fold in (True, False):
        out, _, cache = layer.forward(TokenInputs(xp.from_numpy(table_np), ids, fold), lengths=lengths)
        assert cache.folded is fold
        d_table, _, grads = layer.backward(d_out, None, cache)
        np.testing.assert_allclose(xp.to_numpy(out), xp.to_numpy(out_ref), **tol)
        np.testing.assert_allclose(xp.to_numpy(d_table), d_table_ref, **tol)
        for name in grads_ref:
            np.testing.assert_allclose(xp.to_numpy(grads[name]), xp.to_numpy(grads_ref[name]), err_msg=name, **tol)


def test_token_inputs_fold_only_when_it_saves_work():
    small, large = np.zeros((65, 128)), np.zeros((50_000, 128))
    ids = np.zeros((32, 64), dtype=np.int64)
    assert TokenInputs(small, ids).worth_folding(1024)
    assert not TokenInputs(large, ids).worth_folding(1024)


# --- float32 and layout of the NumPy training step --------------------------------------------------------


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_numpy_training_stays_float32_and_batch_fastest(cell, options, monkeypatch):
    seen = []
    cls = type(mlxrnn.make_cell(cell, 2, 2, **options))
    whole_sequence = hasattr(cls, "sequence_forward")  # no per-step loop (and no per-step products) to lay out
    original_step = cls.sequence_forward if whole_sequence else cls.step

    def recording_step(self, xp, params, x_proj, state):
        new_state, step_cache = original_step(self, xp, params, x_proj, state)
        seen.extend(a for a in (*new_state, *step_cache.values()) if getattr(a, "ndim", 0) == 2)
        return new_state, step_cache

    def recording_sequence(self, xp, params, x_proj, state, mask, reverse=False):
        outputs, new_state, cache = original_step(self, xp, params, x_proj, state, mask, reverse)
        seen.extend(a for a in (outputs, *new_state, *cache.values()) if getattr(a, "ndim", 0) >= 2)
        return outputs, new_state, cache

    monkeypatch.setattr(cls, "sequence_forward" if whole_sequence else "step",
                        recording_sequence if whole_sequence else recording_step)
    config = SequenceModelConfig(input_size=9, embed_size=5, hidden_size=6, num_layers=2, bidirectional=True,
                                 dropout=0.2, output_size=9, cell=cell, cell_options=options)
    model = SequenceModel(config, backend="numpy")
    trainer = Trainer(model, Adam(lr=0.01), clip_norm=1.0)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(0, 9, (4, 5)), "targets": rng.integers(0, 9, (4, 5)),
             "lengths": np.array([5, 3, 5, 1])}
    _, grads, _ = model.loss_and_grads(batch)
    trainer.step(batch)
    assert seen and all(a.dtype == np.float32 for a in seen)
    if not whole_sequence:
        assert all(a.strides[0] == a.itemsize for a in seen)  # batch-fastest: the fast OpenBLAS layout
    for name, value in {**grads, **model.parameters()}.items():
        assert value.dtype == np.float32 and value.flags.c_contiguous, name


# --- the MLX rows: graph nodes and the device -----------------------------------------------------------

needs_mlx = pytest.mark.skipif(not mlxrnn.mlx_installed(), reason="MLX is not installed (pip install 'mlxrnn[mlx]')")


@needs_mlx
def test_graph_nodes_count_a_fused_kernel_once():
    import mlx.core as mx

    from mlxrnn.bench.workloads import count_graph_nodes

    x, y = mx.ones((2, 2)), mx.ones((2, 2))
    mx.eval(x, y)

    def f(a, b):
        return mx.tanh(a * b + 1.0) * 2.0

    assert count_graph_nodes([f(x, y)]) >= 4  # multiply, add, tanh, multiply (and broadcasts)
    assert count_graph_nodes({"out": mx.compile(f)(x, y)}) == 1
    assert count_graph_nodes([x]) == 0  # evaluated arrays are inputs, not work


@needs_mlx
def test_mlx_rows_report_the_device_and_fewer_nodes_compiled():
    from mlxrnn.bench.harness import run_benchmarks
    from mlxrnn.bench.report import format_summary, format_table

    settings = BenchSettings(cells=["lstm"], sizes=["tiny"], impls=["mlx", "mlx-compiled"], tasks=["train", "sample"],
                             repeats=1, warmup=1, sample_tokens=3)
    report = run_benchmarks(settings, isolate=False)
    rows = {(r["impl"], r["task"]): r for r in report["results"]}
    eager, compiled = rows[("mlx", "train")]["graph_nodes"], rows[("mlx-compiled", "train")]["graph_nodes"]
    assert 0 < compiled < eager
    assert "graph_nodes" not in rows[("mlx-compiled", "sample")]
    assert report["machine"]["mlx_device"].split(":")[0] in ("cpu", "gpu")
    assert f"{eager:,}" in format_table(report) and "graph nodes/step" in format_table(report, markdown=True)
    assert f"MLX device: {report['machine']['mlx_device']}" in format_summary(report)
