"""The MLX training step as one compiled function: the default whenever the backend is MLX.

    step(params, optimizer state, step scalars, batch, dropout keep-masks)
        -> (loss, grad norm before clipping, new params, new optimizer state, final recurrent state)

It is the eager :class:`~mlxrnn.training.trainer.Trainer` step written as a pure function —
``model.loss_and_grads`` (forward with caches, then the same hand-written ``step_backward``
BPTT, once), clipping, then ``optimizer.apply_single`` per parameter — traced once by
``mx.compile``, which fuses the many small element-wise ops of every time step into a few
kernels and replays the graph without running Python. On a GPU that per-op dispatch is what
an unrolled RNN step pays for.

What stays on the host, before any array goes to the device (never inside the step):

* validation: token ids in range, class targets, NaN/Inf (``check_batch``), shapes,
  lengths/mask — each array is checked once, as NumPy, then transferred;
* dropout keep-masks, drawn from the trainer's NumPy generator exactly as the eager step draws
  them (same calls, same order), so NumPy, eager MLX and compiled MLX train on identical masks,
  and ``--resume`` is exact because that generator's state is already in every checkpoint;
* the optimizer's step scalars (learning rate, Adam's bias corrections, see
  :meth:`~mlxrnn.nn.optim.Optimizer.step_scalars`), passed in as 0-d arrays: a schedule changes
  numbers, never the graph.

Nothing in the step reads a value back (no ``.item()``, ``to_numpy`` or ``np.asarray``): the
trainer starts it with ``mx.async_eval`` and returns, so the host validates and transfers the
next batch while the device still runs this one; loss and grad norm are read only when asked.

Recompilation is bounded. ``mx.compile`` traces once per *signature*: the shapes and dtypes of
every batch array and dropout mask (the parameters' shapes are fixed). Constants captured by
the trace — clip thresholds, the optimizer's fixed hyperparameters — are part of the key too.

* A language-model run has two signatures: full windows (B, T) and the epoch's last, shorter
  window (B, T'); evaluation runs eagerly. Two traces per run, however long.
* Batches that carry ``lengths`` or ``mask`` (variable-length data) are padded along time to a
  multiple of :data:`TIME_BUCKET` on the host: padded steps are masked (the state passes
  through, the loss weighs them 0), so the numbers do not change, and lengths up to T_max give
  at most ⌈T_max / 16⌉ signatures per batch size.
* At most :data:`MAX_TRACES` traced steps are kept, least recently used dropped first, so even
  adversarial shapes cannot grow memory without bound.

Scope: :class:`~mlxrnn.models.sequence_model.SequenceModel` (language models, and any
many-to-many or many-to-one model built from it) without a ``grad_transform``; the
data-parallel all-reduce and the other task models train through the eager step.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.models.blocks import batch_mask, check_dense_numpy
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.nn.clip import clip_gradients
from mlxrnn.nn.layers import check_token_ids
from mlxrnn.nn.losses import check_class_targets, check_probability_targets
from mlxrnn.nn.optim import Optimizer

#: variable-length batches (with lengths or mask) are padded along time to a multiple of this
TIME_BUCKET = 16
#: traced steps kept at once (least recently used dropped first)
MAX_TRACES = 8


def can_compile(model: Any, grad_transform: Any = None) -> tuple[bool, str]:
    """Whether :class:`CompiledStep` can train ``model`` here, and if not, why (one sentence)."""
    if getattr(model.xp, "name", None) != "mlx":
        return False, "the compiled step is MLX's; this model's backend is " + str(getattr(model.xp, "name", "?"))
    if type(model) is not SequenceModel:
        return False, f"the compiled step trains SequenceModel; {type(model).__name__} trains eagerly"
    if grad_transform is not None:
        return False, "a grad_transform (the data-parallel all-reduce) runs in the eager step"
    return True, ""


class _KeepMasks:
    """Hands the precomputed keep-masks (bool, (T or 1, B, F)) to the model and its recurrent
    layers in the order they ask, scaled as the eager step scales them: keep / (1 − p)."""

    def __init__(self, masks: list):
        self.masks, self.used = list(masks), 0

    def dropout_mask(self, xp: Any, shape: tuple, p: float) -> Any:
        if self.used >= len(self.masks) or tuple(self.masks[self.used].shape) != tuple(shape):
            raise ShapeError(f"the compiled step drew dropout masks that do not fit the model (wanted {shape})")
        mask = self.masks[self.used]
        self.used += 1
        return xp.astype(mask, xp.dtype) * (1.0 / (1.0 - p))


def _signature(tree: Any) -> Any:
    """Shapes and dtypes of every array in a tree of dicts, tuples and lists (the compile key)."""
    if isinstance(tree, Mapping):
        return tuple((key, _signature(tree[key])) for key in sorted(tree))
    if isinstance(tree, (tuple, list)):
        return tuple(_signature(item) for item in tree)
    return (tuple(tree.shape), str(tree.dtype))


def _pad_time(array: np.ndarray, steps: int) -> np.ndarray:
    """Zero-pad axis 1 (time) of a host array to ``steps``."""
    if array.shape[1] == steps:
        return array
    widths = [(0, 0)] * array.ndim
    widths[1] = (0, steps - array.shape[1])
    return np.pad(array, widths)


class CompiledStep:
    """The compiled training step of ``model`` with ``optimizer`` (see the module docstring).

    Call it with a host batch and the dropout generator; it updates the model's parameters and
    the optimizer's state and ``step_count`` in place, and returns ``(loss, grad_norm,
    final_state)`` as device arrays, not yet evaluated.
    """

    def __init__(self, model: SequenceModel, optimizer: Optimizer, clip_norm: float | None = None,
                 clip_value: float | None = None, max_traces: int = MAX_TRACES, time_bucket: int = TIME_BUCKET):
        ok, why = can_compile(model)
        if not ok:
            raise ConfigError(why)
        self.model, self.optimizer = model, optimizer
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.max_traces, self.time_bucket = max_traces, time_bucket
        self.traces = 0  #: how many times a step was traced (compiled) so far
        self._functions: OrderedDict[Any, Any] = OrderedDict()
        self._zero_states: dict[int, Any] = {}

    # --- the pure function mx.compile traces -------------------------------------------------------
    def _traced_step(self, params: dict, opt_state: dict, scalars: dict, batch: dict, keep_masks: list):
        self.traces += 1  # Python runs only while tracing: this counts compilations
        model, optimizer, xp = self.model, self.optimizer, self.model.xp
        model.load_parameters(params)
        masks = _KeepMasks(keep_masks)
        loss, grads, aux = model.loss_and_grads(batch, training=True, rng=masks)
        if masks.used != len(masks.masks):
            raise ShapeError("the compiled step drew more dropout masks than the model used")
        grads, norm = clip_gradients(xp, grads, self.clip_value, self.clip_norm)
        new_params, new_state = {}, {}
        for name, param in params.items():
            new_params[name], new_state[name] = optimizer.apply_single(xp, grads[name], param, opt_state[name],
                                                                       scalars)
        return loss, norm, new_params, new_state, aux["final_state"]

    def _function(self, key: Any):
        import mlx.core as mx

        function = self._functions.get(key)
        if function is None:
            # A fresh callable per signature: MLX keys its trace cache by the callable, so each
            # entry holds exactly one trace, and dropping the entry frees it.
            function = mx.compile(partial(self._traced_step))
            self._functions[key] = function
            while len(self._functions) > self.max_traces:
                self._functions.popitem(last=False)
        self._functions.move_to_end(key)
        return function

    # --- host side: validate, pad, draw masks, transfer ---------------------------------------------
    def device_batch(self, batch: Mapping[str, Any]) -> tuple[dict, int, int]:
        """Validate a host batch once and move it to the device: (arrays, B, T unpadded).

        Backend arrays are taken as validated and passed through (see ``check_token_ids``).
        """
        model, xp, config = self.model, self.model.xp, self.model.config
        if not isinstance(batch, Mapping) or "inputs" not in batch or "targets" not in batch:
            got = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
            raise ConfigError(f"a batch must be a dict with 'inputs' and 'targets' entries; got {got}")
        inputs, targets = batch["inputs"], batch["targets"]
        host = isinstance(inputs, (np.ndarray, list, tuple))
        if host:
            inputs = np.asarray(inputs)
            if config.input_kind == "dense":
                check_dense_numpy(inputs, config.input_size)
        expected = 3 if config.input_kind == "dense" else 2
        if len(inputs.shape) != expected or (expected == 3 and inputs.shape[2] != config.input_size):
            layout = f"(batch, time, {config.input_size})" if expected == 3 else "(batch, time)"
            raise ShapeError(f"inputs must have shape {layout}; got {tuple(inputs.shape)}")
        B, T = int(inputs.shape[0]), int(inputs.shape[1])
        if T < 1:
            raise ShapeError("inputs must have at least one time step")
        mask = batch_mask(batch, B, T)  # float64 (B, T) or None, validated
        steps = -(-T // self.time_bucket) * self.time_bucket if (mask is not None and host) else T
        out: dict[str, Any] = {}
        if host:
            inputs = _pad_time(inputs, steps)
            out["inputs"] = (xp.from_numpy(inputs) if config.input_kind == "dense"
                             else check_token_ids(xp, inputs, config.input_size))
        else:
            out["inputs"] = check_token_ids(xp, inputs, config.input_size) if expected == 2 else inputs
        out["targets"] = self._device_targets(targets, B, T, steps)
        if mask is not None:
            out["mask"] = xp.from_numpy(_pad_time(mask, steps))
        parts = model.rnn._state_parts(batch.get("initial_state"), B)  # shapes checked, NumPy converted
        if parts[0] is None:
            parts = [self._zeros(B)] * len(parts)
        out["initial_state"] = tuple(parts) if len(parts) > 1 else parts[0]
        return out, B, T

    def _device_targets(self, targets: Any, B: int, T: int, steps: int) -> Any:
        config, xp = self.model.config, self.model.xp
        if not isinstance(targets, (np.ndarray, list, tuple)):
            return targets  # a backend array: validated by its producer
        sequence = config.output == "sequence"
        if config.loss == "cross_entropy":
            targets = check_class_targets(targets, (B, T) if sequence else (B,), config.output_size)
            return xp.from_numpy(_pad_time(targets, steps) if sequence else targets)
        targets = (check_probability_targets(targets) if config.loss == "binary_cross_entropy"
                   else np.asarray(targets, dtype=np.float64))
        expected = (B, T, config.output_size) if sequence else (B, config.output_size)
        if targets.shape != expected:
            raise ShapeError(f"targets must have the outputs' shape {expected}; got {targets.shape}")
        return xp.from_numpy(_pad_time(targets, steps) if sequence else targets)

    def _zeros(self, batch_size: int) -> Any:
        zeros = self._zero_states.get(batch_size)
        if zeros is None:
            rnn = self.model.rnn
            zeros = self.model.xp.zeros((rnn.num_layers * rnn.num_directions, batch_size, rnn.hidden_size))
            self._zero_states[batch_size] = zeros
        return zeros

    def keep_masks(self, generator: Any, batch_size: int, time_steps: int, padded_steps: int) -> list:
        """The dropout keep-masks the eager step would draw from ``generator`` — same calls, same
        order: the embedding output's, one per recurrent layer below the top, the head input's —
        each (T, B, F), or (1, B, F) when locked, padded along time to ``padded_steps``, on the device."""
        model, xp = self.model, self.model.xp
        config, rnn = model.config, model.rnn
        sites = []  # (p, steps, features) in the eager step's order
        if config.embed_dropout:
            sites.append((config.embed_dropout, time_steps, rnn.input_size))
        if rnn.dropout and rnn.num_layers >= 2:
            sites += [(rnn.dropout, time_steps, rnn.output_size)] * (rnn.num_layers - 1)
        if config.output_dropout:
            sites.append((config.output_dropout, time_steps if config.output == "sequence" else 0, rnn.output_size))
        masks = []
        for p, steps, features in sites:
            per_step = steps > 0 and not rnn.locked_dropout  # else one mask for all steps: nothing to pad
            keep = generator.random(size=(steps if per_step else 1, batch_size, features)) >= p
            if per_step and padded_steps > steps:
                keep = np.concatenate([keep, np.zeros((padded_steps - steps,) + keep.shape[1:], bool)])
            masks.append(xp.from_numpy(keep))
        return masks

    # --- one step ----------------------------------------------------------------------------------
    def __call__(self, batch: Mapping[str, Any], generator: Any) -> tuple[Any, Any, Any]:
        model, optimizer, xp = self.model, self.optimizer, self.model.xp
        arrays, B, T = self.device_batch(batch)
        steps = int(arrays["inputs"].shape[1])
        masks = self.keep_masks(generator, B, T, steps)
        params = model.parameters()
        optimizer.init_state(xp, params)
        optimizer.step_count += 1
        try:
            scalars = {name: xp.asarray(value, dtype=xp.dtype) for name, value in optimizer.step_scalars().items()}
            key = (_signature(arrays), _signature(masks), self.clip_norm, self.clip_value, optimizer.name,
                   json.dumps(optimizer.hyper(), sort_keys=True))
            loss, norm, new_params, new_state, final_state = self._function(key)(
                params, optimizer.state, scalars, arrays, masks
            )
        except BaseException:
            optimizer.step_count -= 1
            model.load_parameters(params)  # a failed trace may have left placeholders in the model
            raise
        model.load_parameters(new_params)
        optimizer.state = new_state
        return loss, norm, final_state
