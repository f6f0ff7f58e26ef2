"""benchmarks/word_lm_quality.py compares like with like: the PyTorch peer starts from mlxrnn's
weights and computes mlxrnn's function, its data files split the corpus as documented, and the
flags it passes are the fields it names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.lm.model import language_model_config
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.run.option_types import option_fields
from mlxrnn.run.options import TrainOptions

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install torch, CPU build)")


def _benchmark():
    spec = importlib.util.spec_from_file_location("word_lm_quality", ROOT / "benchmarks" / "word_lm_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_torch
@pytest.mark.parametrize("tie,locked", [(True, False), (False, True)])
def test_the_peer_starts_from_mlxrnns_weights_and_computes_the_same_function(tie, locked):
    import torch

    from mlxrnn.io.interop import to_torch

    options = TrainOptions(layers=2, hidden=8, embed=8, tie=tie, locked_dropout=locked, dropout=0.5)
    reference = SequenceModel(language_model_config(13, **options.model_settings()), backend="numpy")
    peer = _benchmark().PeerLM(13, options)
    peer.load_from(reference, to_torch)
    peer.eval()
    ids = np.random.default_rng(0).integers(0, 13, size=(3, 5))
    ours, state, _ = reference.forward(ids)
    with torch.no_grad():
        theirs, their_state = peer(torch.from_numpy(ids), None)
        # The carried state continues alike: a second window from each side's final state.
        ours_next, _, _ = reference.forward(ids[:, ::-1], initial_state=state)
        theirs_next, _ = peer(torch.from_numpy(np.ascontiguousarray(ids[:, ::-1])), their_state)
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(theirs_next.numpy(), ours_next, rtol=1e-4, atol=1e-5)
    # Parameters alike, plus PyTorch's second (recurrent) LSTM bias per layer, zero at the start.
    recurrent_biases = options.layers * 4 * options.hidden
    assert sum(p.numel() for p in peer.parameters()) == reference.num_parameters() + recurrent_biases


def test_the_data_files_split_the_corpus_by_tokens_at_a_line(tmp_path):
    data = _benchmark().prepare_data(tmp_path)
    train, valid = (Path(data[name]).read_text(encoding="utf-8") for name in ("train", "valid"))
    count = {name: len(text.split()) + text.count("\n") for name, text in (("train", train), ("valid", valid))}
    assert count == {"train": data["train_tokens"], "valid": data["valid_tokens"]}
    assert 0.89 < count["train"] / (count["train"] + count["valid"]) < 0.91
    assert train == train.lower() and "'s" in train.split() and "<EOS>" not in train


def test_the_benchmark_passes_fields_as_their_own_flags():
    benchmark = _benchmark()
    names = {spec.name for spec in option_fields()}
    assert set(benchmark.MODEL) <= names and set(benchmark.BASELINE) <= names
    assert benchmark.flags({"seq_len": 35, "tie": True, "locked_dropout": False}) == ["--seq-len", "35", "--tie"]
