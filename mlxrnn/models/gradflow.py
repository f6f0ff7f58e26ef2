"""Gradient flow through time: how much of a loss's gradient reaches each earlier step.

The course notes' argument for gated cells, measured. Backpropagating a loss at the last step
T−1 through a vanilla RNN multiplies the gradient once per step by the step's Jacobian,
    ∂L/∂a⟨t−1⟩ = (∂L/∂a⟨t⟩ ∗ g′(z⟨t⟩)) W_aaᵀ,
so its norm shrinks (or grows) roughly geometrically with the distance from the loss. An LSTM
adds a path through the memory cell whose per-step factor is the forget gate,
    ∂L/∂c⟨t−1⟩ ⊇ ∂L/∂c⟨t⟩ ∗ Γ_f,
and a GRU one through (1 − Γ_u); gates near 1 keep the gradient alive over long spans.

:func:`gradient_flow` runs a :class:`SequenceModel`'s own layers on a batch, puts the loss on the
last step only, and reads every number from :meth:`Recurrent.backward` (its ``step_grads``
record) and the forward caches: nothing here differentiates anything itself. For a batch of B
sequences, with ℓ_b the loss of sequence b's last prediction and L = Σ_b ℓ_b (the sequences are
independent, so ∂L/∂h_b⟨t⟩ = ∂ℓ_b/∂h_b⟨t⟩):

    hidden_norms (layers, T, B)  ‖∂ℓ_b/∂h⟨t⟩‖₂ of each layer's hidden state after step t
    input_norms  (T, B)          ‖∂ℓ_b/∂x⟨t⟩‖₂ of the stack's input at step t (the embedding)
    saturation   {gate: (layers, T)}  fraction of that sigmoid gate's values < 0.05 or > 0.95
                                      over the batch and units (gated cells only)

A saturated gate passes (almost) no gradient to its own pre-activation: σ′ = σ(1 − σ) < 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.models.sequence_model import SequenceModel

#: a sigmoid gate value outside (LOW, HIGH) counts as saturated
SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95


@dataclass
class GradientFlow:
    """Per-step gradient norms and gate saturation of one model on one batch (see the module doc)."""

    cell: str
    loss: float  #: mean over the batch of the last step's loss
    hidden_norms: np.ndarray  #: (layers, T, B)
    input_norms: np.ndarray  #: (T, B)
    saturation: dict[str, np.ndarray] = field(default_factory=dict)  #: gate name -> (layers, T)

    @property
    def time_steps(self) -> int:
        """T, the steps the gradients were measured over."""
        return int(self.hidden_norms.shape[1])

    def steps_before_loss(self) -> np.ndarray:
        """(T,) distance of each step from the loss: T−1, …, 1, 0."""
        return np.arange(self.time_steps)[::-1].copy()

    def median_hidden(self) -> np.ndarray:
        """(layers, T) the median over the batch of ‖∂ℓ_b/∂h⟨t⟩‖."""
        return np.median(self.hidden_norms, axis=2)

    def median_input(self) -> np.ndarray:
        """(T,) the median over the batch of ‖∂ℓ_b/∂x⟨t⟩‖."""
        return np.median(self.input_norms, axis=1)

    def decay(self) -> float:
        """Median ‖∂ℓ/∂h‖ of the top layer at the first step over that at the last: how much survives."""
        top = self.median_hidden()[-1]
        return float(top[0] / top[-1]) if top[-1] > 0 else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready summary: batch medians per step (step 0 first), saturation per gate."""
        return {
            "cell": self.cell,
            "loss": self.loss,
            "time_steps": self.time_steps,
            "batch_size": int(self.hidden_norms.shape[2]),
            "hidden_grad_norm": self.median_hidden().tolist(),
            "input_grad_norm": self.median_input().tolist(),
            "first_over_last": self.decay(),
            "gate_saturation": {gate: values.tolist() for gate, values in self.saturation.items()},
        }


def _dense_inputs(model: SequenceModel, inputs: Any) -> Any:
    """The stack's (B, T, D) input, with an embedding lookup materialised so dx is per step."""
    # as_tokens=False: a (B, T, E) lookup, not TokenInputs the layer could fold into the table's gradient
    x, _ = model.embedding.forward(inputs, as_tokens=False)
    return x


def gradient_flow(model: SequenceModel, inputs: Any, targets: Any) -> GradientFlow:
    """‖∂ℓ/∂h⟨t⟩‖, ‖∂ℓ/∂x⟨t⟩‖ and gate saturation at every step, for a loss on the last step.

    Args:
        model: a unidirectional SequenceModel with ``output="sequence"`` (e.g. a language
            model's ``lm.model``), fresh or trained.
        inputs: (B, T) token ids, or (B, T, D) floats for dense inputs.
        targets: the per-step targets (B, T) (or (B, T, F)); only the last step's are used.
    Returns:
        a :class:`GradientFlow` of float64 NumPy arrays.
    """
    config, xp, rnn = model.config, model.xp, model.rnn
    if config.output != "sequence" or rnn.bidirectional:
        raise ConfigError(
            "gradient flow needs a unidirectional model with an output at every step (output='sequence'): "
            "it follows the last step's loss back in time"
        )
    x = _dense_inputs(model, inputs)
    B, T = int(x.shape[0]), int(x.shape[1])
    targets_np = np.asarray(targets) if isinstance(targets, (np.ndarray, list, tuple)) else xp.to_numpy(targets)
    if tuple(targets_np.shape[:2]) != (B, T):
        raise ShapeError(f"targets must have the inputs' (batch, time) = {(B, T)} leading shape; "
                         f"got {tuple(targets_np.shape)}")
    hidden, _, cache = rnn.forward(x)
    weight, bias = model._head_weight(), model.head.params.get("b")
    logits = xp.matmul(hidden[:, T - 1 :, :], weight)  # (B, 1, O): only the last step is scored
    if bias is not None:
        logits = logits + bias
    loss, d_logits = model.loss_fn(xp, logits, targets_np[:, T - 1 :], reduction="sum")
    d_last = xp.matmul(d_logits, xp.permute_dims(weight, (1, 0)))  # (B, 1, H_out)
    d_hidden = d_last if T == 1 else xp.concat([xp.zeros((B, T - 1, rnn.output_size)), d_last], axis=1)
    record: dict = {}
    d_x, _, _ = rnn.backward(d_hidden, None, cache, step_grads=record)

    def norms(a: Any) -> np.ndarray:  # (B, ·) -> (B,) Euclidean norm per sequence, in float64
        return np.linalg.norm(np.asarray(xp.to_numpy(a), dtype=np.float64).reshape(B, -1), axis=1)

    hidden_norms = np.array([[norms(record[(layer, 0)][t][0]) for t in range(T)] for layer in range(rnn.num_layers)])
    d_x_np = np.asarray(xp.to_numpy(d_x), dtype=np.float64)
    input_norms = np.linalg.norm(d_x_np, axis=2).T  # (T, B)
    saturation: dict[str, np.ndarray] = {}
    for layer, cell in enumerate(rnn.cells):
        for t, step_cache in enumerate(cache.directions[(layer, 0)].steps):  # forward: in time order
            for gate, values in cell.sigmoid_gates(step_cache).items():
                v = np.asarray(xp.to_numpy(values), dtype=np.float64)
                table = saturation.setdefault(gate, np.zeros((rnn.num_layers, T)))
                table[layer, t] = np.mean((v < SATURATION_LOW) | (v > SATURATION_HIGH))
    return GradientFlow(
        cell=rnn.cell_name,
        loss=float(xp.to_numpy(loss)) / B,
        hidden_norms=hidden_norms,
        input_norms=input_norms,
        saturation=saturation,
    )
