"""Forward only (``keep_cache=False``: evaluation, scoring) gives the cached forward's numbers
exactly, on every cell, for token and dense inputs, both directions, stacks, masks and states."""

from __future__ import annotations

import numpy as np
import pytest

from mlxrnn.backend import get_backend
from mlxrnn.backend.kernels import numba_installed
from mlxrnn.backend.numpy_backend import NumpyBackend
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.nn.layers import Recurrent, TokenInputs
from mlxrnn.testing import CELL_VARIANT_IDS, CELL_VARIANTS

KERNELS = ["numpy"] + (["numba"] if numba_installed() else [])


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=CELL_VARIANT_IDS)
@pytest.mark.parametrize("layers,bidirectional,masked", [(1, False, False), (2, False, True), (2, True, False)])
def test_forward_only_equals_the_cached_forward(kernels, cell, options, layers, bidirectional, masked):
    xp = NumpyBackend("float32", kernels=kernels)
    rnn = Recurrent(5, 8, num_layers=layers, bidirectional=bidirectional, cell=cell, backend=xp, seed=3, **options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    lengths = np.array([6, 2, 4]) if masked else None
    initial = rnn.zero_state(3)
    initial = tuple(p + 0.1 for p in initial) if isinstance(initial, tuple) else initial + 0.1
    cached, cached_state, cache = rnn.forward(x, initial_state=initial, lengths=lengths)
    fast, fast_state, none = rnn.forward(x, initial_state=initial, lengths=lengths, keep_cache=False)
    assert cache is not None and none is None
    np.testing.assert_array_equal(fast, cached)
    for a, b in zip(_parts(fast_state), _parts(cached_state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("fold", [True, False])
def test_forward_only_lstm_reads_the_projected_table_exactly(kernels, fold):
    xp = NumpyBackend("float32", kernels=kernels)
    rnn = Recurrent(4, 16, num_layers=2, cell="lstm", backend=xp, seed=1)
    rng = np.random.default_rng(1)
    table = xp.from_numpy(rng.standard_normal((7, 4)))
    ids = rng.integers(0, 7, (5, 9))
    cached, cached_state, _ = rnn.forward(TokenInputs(table, ids, fold))
    fast, fast_state, _ = rnn.forward(TokenInputs(table, ids, fold), keep_cache=False)
    np.testing.assert_array_equal(fast, cached)
    for a, b in zip(fast_state, cached_state):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sequence_model_forward_only_same_logits_no_cache(cell):
    model = SequenceModel(input_kind="embedding", input_size=11, embed_size=6, cell=cell, hidden_size=12,
                          num_layers=2, output_size=11, backend=get_backend("numpy"))
    ids = np.random.default_rng(2).integers(0, 11, (4, 7))
    logits, state, cache = model.forward(ids)
    fast_logits, fast_state, none = model.forward(ids, keep_cache=False)
    assert cache is not None and none is None
    np.testing.assert_array_equal(fast_logits, logits)
    for a, b in zip(_parts(fast_state), _parts(state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not numba_installed(), reason="the fused loop is a numba kernel")
def test_forward_only_lstm_runs_the_fused_loop(monkeypatch):
    from mlxrnn.backend.numba_pointwise import NumbaKernels

    calls = []
    original = NumbaKernels.lstm_infer_sequence
    monkeypatch.setattr(NumbaKernels, "lstm_infer_sequence", lambda self, *a, **k: calls.append(k) or original(self, *a, **k))
    rnn = Recurrent(4, 8, num_layers=2, cell="lstm", backend=NumpyBackend("float32", kernels="numba"))
    table = rnn.xp.from_numpy(np.ones((5, 4)))
    rnn.forward(TokenInputs(table, np.zeros((2, 3), dtype=np.int64), True), keep_cache=False)
    assert [sorted(k) for k in calls] == [["ids", "table"], ["x_proj"]]  # layer 0 reads table rows in the kernel


@pytest.mark.skipif(not numba_installed(), reason="the row-reading step kernel is a numba kernel")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_step_kernel_reading_table_rows_equals_gathering_them(monkeypatch, bidirectional):
    """Training's folded lookup: the numba LSTM step reads the projected table's rows itself; the
    outputs, states and every gradient are the ones of gathering the rows first, bit for bit."""
    from mlxrnn.nn import direction_loops

    xp = NumpyBackend("float32", kernels="numba")
    rnn = Recurrent(6, 16, num_layers=2, bidirectional=bidirectional, cell="lstm", backend=xp, seed=4)
    rng = np.random.default_rng(5)
    table = xp.from_numpy(rng.standard_normal((9, 6)))
    ids = rng.integers(0, 9, (4, 7))
    d_out = rng.standard_normal((4, 7, rnn.output_size)).astype(np.float32)

    def run():
        out, state, cache = rnn.forward(TokenInputs(table, ids, True))
        return out, state, rnn.backward(d_out, None, cache)

    reading = run()
    with monkeypatch.context() as patch:
        patch.setattr(direction_loops, "_reads_rows", lambda cell, loop_xp: False)
        gathering = run()
    np.testing.assert_array_equal(reading[0], gathering[0])
    for a, b in zip(reading[1], gathering[1]):
        np.testing.assert_array_equal(a, b)
    d_table, _, grads = reading[2]
    d_table_ref, _, grads_ref = gathering[2]
    np.testing.assert_array_equal(d_table, d_table_ref)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_ref[name], err_msg=name)
