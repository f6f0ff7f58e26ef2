"""Dropout on the embedding output, between layers and before the output layer, per step or
locked (one mask per sequence): gradients against float64 central differences with the masks
held fixed, what each mask looks like, evaluation untouched, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlxrnn import SequenceModel, SequenceModelConfig
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.nn.dropout import dropout_mask
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.testing import assert_gradients_close, numerical_gradient
from mlxrnn.text.corpus import bundled_corpus_path

V, B, T = 7, 3, 4
#: one entry per kind of dropout (and the combinations a word model uses): config overrides
KINDS = {
    "embedding": {"embed_dropout": 0.4},
    "between-layers": {"dropout": 0.4},
    "output": {"output_dropout": 0.4},
    "embedding-locked": {"embed_dropout": 0.4, "locked_dropout": True},
    "between-layers-locked": {"dropout": 0.4, "locked_dropout": True},
    "output-locked": {"output_dropout": 0.4, "locked_dropout": True},
    "all-tied": {"embed_dropout": 0.3, "dropout": 0.3, "output_dropout": 0.3, "tie_weights": True},
    "all-locked-tied": {"embed_dropout": 0.3, "dropout": 0.3, "output_dropout": 0.3, "tie_weights": True,
                        "locked_dropout": True},
    "one-hot-inputs": {"input_kind": "one_hot", "embed_dropout": 0.4, "output_dropout": 0.4},
    "last-state-head": {"output": "last", "output_dropout": 0.4, "embed_dropout": 0.4, "dropout": 0.4},
    "gru-all-locked": {"cell": "gru", "embed_dropout": 0.3, "dropout": 0.3, "output_dropout": 0.3,
                       "locked_dropout": True},
}


def _model(overrides: dict) -> SequenceModel:
    settings = dict(input_size=V, embed_size=5, hidden_size=5, num_layers=2, output_size=V, cell="lstm", seed=1)
    model = SequenceModel(SequenceModelConfig(**{**settings, **overrides}), backend="numpy", dtype="float64")
    rng = np.random.default_rng(2)
    model.load_parameters({name: rng.normal(0.0, 0.6, size=v.shape) for name, v in model.parameters().items()})
    return model


def _batch(model: SequenceModel) -> dict:
    rng = np.random.default_rng(3)
    targets = rng.integers(0, V, size=(B,) if model.config.output == "last" else (B, T))
    state = [rng.normal(size=(model.config.num_layers, B, model.config.hidden_size)) for _ in range(2)]
    return {"inputs": rng.integers(0, V, size=(B, T)), "targets": targets,
            "initial_state": tuple(state) if model.config.cell == "lstm" else state[0]}


@pytest.mark.parametrize("kind", list(KINDS))
def test_dropout_gradients_match_finite_differences_with_the_masks_fixed(kind):
    model = _model(KINDS[kind])
    batch = _batch(model)

    def masks():  # a fresh generator with one seed: every loss call draws the same masks
        return np.random.default_rng(11)

    loss, grads, _ = model.loss_and_grads(batch, training=True, rng=masks())
    # The masks are really applied: the training loss is not the evaluation loss.
    assert float(loss) != pytest.approx(float(model.loss(batch, training=False)[0]), rel=1e-6)
    for name, value in model.parameters().items():
        numeric = numerical_gradient(lambda: float(model.loss(batch, training=True, rng=masks())[0]), value)
        assert_gradients_close(grads[name], numeric, f"{kind}: {name}")


@pytest.mark.parametrize("locked", [False, True])
def test_each_mask_drops_what_it_should_and_locked_masks_hold_across_time(locked):
    model = _model({"embed_dropout": 0.5, "dropout": 0.5, "output_dropout": 0.5, "locked_dropout": locked})
    _, _, cache = model.forward(_batch(model)["inputs"], training=True, rng=np.random.default_rng(0))
    masks = {"embedding": cache["embed_mask"], "between layers": cache["rnn"].dropout_masks[0],
             "output": cache["output_mask"]}
    steps = 1 if locked else T
    assert masks["embedding"].shape == (B, steps, 5) and masks["output"].shape == (B, steps, 5)
    assert masks["between layers"].shape == (steps, B, 5)  # the stack runs time-major
    for name, mask in masks.items():
        assert set(np.unique(mask)) <= {0.0, 2.0}, name  # dropped, or kept and scaled by 1 / (1 − p)
    # Evaluation draws no mask and reads the lookup folded into layer 0, as before dropout existed.
    _, _, evaluation = model.forward(_batch(model)["inputs"], training=False)
    assert evaluation["embed_mask"] is None and evaluation["output_mask"] is None
    assert evaluation["encoded"].as_tokens and not evaluation["rnn"].dropout_masks


def test_masks_keep_the_expectation():
    """E[m] = 1: a unit is kept with probability 1 − p and then scaled by 1 / (1 − p)."""
    rng = np.random.default_rng(0)
    for p, locked in [(0.2, False), (0.5, True), (0.65, False)]:
        mask = dropout_mask(rng, p, steps=50, batch=40, features=60, locked=locked)
        assert mask.shape == ((1 if locked else 50), 40, 60)
        assert abs(mask.mean() - 1.0) < 0.05 and abs((mask == 0).mean() - p) < 0.03


def test_dropout_is_off_when_evaluating_and_at_zero():
    plain, dropped = _model({}), _model({"embed_dropout": 0.5, "dropout": 0.5, "output_dropout": 0.5})
    inputs = _batch(plain)["inputs"]
    np.testing.assert_array_equal(plain.forward(inputs)[0], dropped.forward(inputs)[0])
    np.testing.assert_array_equal(plain.forward(inputs, training=True, rng=np.random.default_rng(0))[0],
                                  plain.forward(inputs)[0])


# --- runs ------------------------------------------------------------------------------------
SMALL = dict(layers=2, hidden=16, embed=16, seq_len=8, batch_size=3, eval_every=3, log_every=1, backend="numpy")


def _train_losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}


def test_a_run_with_every_dropout_resumes_bit_for_bit(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:5000], encoding="utf-8")
    options = dict(corpus=str(corpus), level="word", lowercase=True, dropout=0.3, embed_dropout=0.2,
                   output_dropout=0.4, locked_dropout=True, tie=True, **SMALL)
    train_language_model(TrainOptions(steps=8, **options), tmp_path / "whole")
    train_language_model(TrainOptions(steps=5, **options), tmp_path / "split")
    train_language_model(TrainOptions(steps=8, **options), tmp_path / "split", resume=True)
    whole, split = _train_losses(tmp_path / "whole"), _train_losses(tmp_path / "split")
    assert sorted(whole) == sorted(split) == list(range(1, 9))
    assert [whole[s] for s in whole] == [split[s] for s in whole]  # bit-for-bit: the mask stream was saved
    a, b = (load_checkpoint(tmp_path / name, tag="last") for name in ("whole", "split"))
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name], err_msg=name)
    config = a.meta["model_config"]
    assert (config["embed_dropout"], config["output_dropout"], config["recurrent"]["locked_dropout"]) == (0.2, 0.4, True)


def test_dropout_options_set_every_place_or_each_end_apart():
    default = TrainOptions().model_settings()  # the character model's setting: between layers only
    assert (default["dropout"], default["embed_dropout"], default["output_dropout"]) == (0.2, 0.0, 0.0)
    both = TrainOptions(dropout=0.5).model_settings()
    assert (both["dropout"], both["embed_dropout"], both["output_dropout"]) == (0.5, 0.5, 0.5)
    apart = TrainOptions(dropout=0.5, embed_dropout=0.1, output_dropout=0.0).model_settings()
    assert (apart["dropout"], apart["embed_dropout"], apart["output_dropout"]) == (0.5, 0.1, 0.0)
    # A run saved before the two ends had dropout keeps its model: dropout between layers only.
    saved = TrainOptions.from_saved({"dropout": 0.3, "hidden": 8})
    assert (saved.embed_dropout, saved.output_dropout, saved.locked_dropout) == (0.0, 0.0, False)
