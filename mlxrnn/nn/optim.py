"""Optimizers written once for every backend.

As in ``mlx.optimizers``, the base class walks the flat parameter dict and each optimizer
writes only :meth:`Optimizer.init_single` (its per-parameter state) and
:meth:`Optimizer.apply_single` (one update). Updates return new arrays instead of mutating,
which MLX requires and NumPy does not mind. ``lr`` is a plain attribute so schedules can set it.

Everything that changes from step to step (the learning rate, Adam's bias corrections) is
folded into a few scalars by :meth:`Optimizer.step_scalars`, computed once per step on the
host in float64, and handed to ``apply_single``. A compiled training step
(:mod:`mlxrnn.training.compiled`) passes the same scalars in as 0-d arrays, so one compiled
graph serves every step and a schedule never triggers a recompilation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError


class Optimizer:
    """Base class: a learning rate, a step count and per-parameter state ("slots", e.g. Adam's
    moments); :meth:`update` applies one step."""
    name = "optimizer"

    def __init__(self, lr: float):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {lr!r}")
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[str, dict[str, Any]] = {}

    def init_single(self, xp, param: Any) -> dict[str, Any]:
        """The fresh state slots of one parameter (none for plain SGD)."""
        return {}

    def step_scalars(self) -> dict[str, float]:
        """The per-step scalars ``apply_single`` reads, for step number ``step_count`` (≥ 1)."""
        return {"lr": self.lr}

    def apply_single(
        self, xp, grad: Any, param: Any, state: dict[str, Any], scalars: Mapping[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """One parameter's update: (grad, param, its slots, the step's scalars) → (new param, new slots)."""
        raise NotImplementedError

    def init_state(self, xp, params: Mapping[str, Any]) -> None:
        """Create the state of every parameter that has none yet (a compiled step needs it all up front)."""
        for name, param in params.items():
            if name not in self.state:
                self.state[name] = self.init_single(xp, param)

    def update(self, xp, params: Mapping[str, Any], grads: Mapping[str, Any]) -> dict[str, Any]:
        """One step: returns the new parameters (same keys as ``params``)."""
        self.step_count += 1
        scalars = self.step_scalars()
        self.init_state(xp, params)
        new_params = {}
        for name, param in params.items():
            new_params[name], self.state[name] = self.apply_single(xp, grads[name], param, self.state[name], scalars)
        return new_params

    def state_arrays(self) -> list:
        """Every state array of every parameter (what a compiled step carries)."""
        return [value for slots in self.state.values() for value in slots.values()]

    # --- checkpoints: scalars go to JSON, tensors to safetensors as "param/slot" -------------
    def state_dict(self, xp) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON scalars: name, step count, lr, hyper-parameters; {"param/slot": NumPy array}) for checkpoints."""
        scalars = {"name": self.name, "step_count": self.step_count, "lr": self.lr, "hyper": self.hyper()}
        tensors = {
            f"{name}/{slot}": xp.to_numpy(value) for name, slots in self.state.items() for slot, value in slots.items()
        }
        return scalars, tensors

    def load_state_dict(
        self,
        xp,
        scalars: Mapping[str, Any],
        tensors: Mapping[str, np.ndarray],
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        """Restore :meth:`state_dict`'s output. With ``shapes`` (each parameter's shape), every
        tensor is checked to be one of this optimizer's slots of a known parameter, of that
        parameter's shape, and each parameter's slots complete, so damage fails here in one line
        of CheckpointError rather than at the next update."""
        if not isinstance(scalars, Mapping) or scalars.get("name") != self.name:
            held = scalars.get("name") if isinstance(scalars, Mapping) else scalars
            raise CheckpointError(f"optimizer state is for {held!r}, not {self.name!r}")
        step_count, lr = scalars.get("step_count"), scalars.get("lr")
        if isinstance(step_count, bool) or not isinstance(step_count, int) or step_count < 0:
            raise CheckpointError(f"optimizer state has an invalid step_count {step_count!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise CheckpointError(f"optimizer state has an invalid learning rate {lr!r}")
        slots: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            name, _, slot = key.rpartition("/")
            slots.setdefault(name, {})[slot] = value
        if shapes is not None:
            self._check_slots(xp, slots, shapes)
        self.step_count, self.lr = step_count, float(lr)
        self.state = {name: {slot: xp.from_numpy(value) for slot, value in values.items()}
                      for name, values in slots.items()}

    def _check_slots(self, xp, slots: Mapping[str, Mapping[str, np.ndarray]],
                     shapes: Mapping[str, tuple[int, ...]]) -> None:
        expected = set(self.init_single(xp, xp.zeros((1,))))  # this optimizer's per-parameter slots
        for name, values in slots.items():
            if name not in shapes:
                raise CheckpointError(f"the optimizer state has moments for {name!r}, which the model does not have")
            if set(values) != expected:
                raise CheckpointError(
                    f"the optimizer state of {name!r} holds {sorted(values)}; {self.name} keeps {sorted(expected)}"
                )
            for slot, value in values.items():
                if tuple(np.shape(value)) != tuple(shapes[name]) or np.asarray(value).dtype.kind != "f":
                    raise CheckpointError(
                        f"optimizer tensor '{name}/{slot}' is {np.asarray(value).dtype} {tuple(np.shape(value))}; "
                        f"the parameter is float {tuple(shapes[name])}"
                    )

    def hyper(self) -> dict:
        """The optimizer's hyper-parameters besides the learning rate, as saved in checkpoints."""
        return {}


class SGD(Optimizer):
    """v ← μ v + g;  p ← p − lr (g + μ v) with Nesterov, else p ← p − lr v (PyTorch's form)."""

    name = "sgd"

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(lr)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ConfigError("nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    def hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def init_single(self, xp, param):
        return {"velocity": xp.zeros_like(param)} if self.momentum else {}

    def apply_single(self, xp, grad, param, state, scalars):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if not self.momentum:
            return param - scalars["lr"] * grad, state
        velocity = self.momentum * state["velocity"] + grad
        step = grad + self.momentum * velocity if self.nesterov else velocity
        return param - scalars["lr"] * step, {"velocity": velocity}


class Adam(Optimizer):
    """m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − lr m̂ / (√v̂ + ε), with bias-corrected m̂, v̂.

    ``weight_decay`` here is L2 added to the gradient (PyTorch's Adam); see :class:`AdamW`.
    """

    name = "adam"

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0
    ):
        super().__init__(lr)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"Adam betas must be in [0, 1), got {betas!r}")
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)

    def hyper(self):
        return {"betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def init_single(self, xp, param):
        return {"m": xp.zeros_like(param), "v": xp.zeros_like(param)}

    def step_scalars(self):
        beta1, beta2 = self.betas
        # Bias corrections folded into the step size (as in the Adam paper, section 2).
        step_size = self.lr * math.sqrt(1.0 - beta2**self.step_count) / (1.0 - beta1**self.step_count)
        eps_hat = self.eps * math.sqrt(1.0 - beta2**self.step_count)
        return {"lr": self.lr, "step_size": step_size, "eps_hat": eps_hat}

    def _adam_step(self, xp, grad, state, scalars):
        beta1, beta2 = self.betas
        m = beta1 * state["m"] + (1.0 - beta1) * grad
        v = beta2 * state["v"] + (1.0 - beta2) * grad * grad
        return scalars["step_size"] * m / (xp.sqrt(v) + scalars["eps_hat"]), {"m": m, "v": v}

    def _fused(self, xp, grad, param, state, scalars, l2: float, decay: float):
        """The whole update in one compiled pass where the backend has one (NumPy with numba:
        12 array passes become 1), else None."""
        kernel = getattr(getattr(xp, "kernels", None), "adam_update", None)
        if kernel is None:
            return None
        out = kernel(grad, param, state["m"], state["v"], self.betas[0], self.betas[1], scalars["step_size"],
                     scalars["eps_hat"], l2, decay)
        return None if out is None else (out[0], {"m": out[1], "v": out[2]})

    def apply_single(self, xp, grad, param, state, scalars):
        fused = self._fused(xp, grad, param, state, scalars, self.weight_decay, 1.0)
        if fused is not None:
            return fused
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        step, state = self._adam_step(xp, grad, state, scalars)
        return param - step, state


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p ← p − lr·wd·p − Adam step."""

    name = "adamw"

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, betas, eps, weight_decay)

    def step_scalars(self):
        return {**super().step_scalars(), "decay": 1.0 - self.lr * self.weight_decay}

    def apply_single(self, xp, grad, param, state, scalars):
        fused = self._fused(xp, grad, param, state, scalars, 0.0, scalars["decay"])
        if fused is not None:
            return fused
        step, state = self._adam_step(xp, grad, state, scalars)
        return param * scalars["decay"] - step, state


class RMSProp(Optimizer):
    """s ← α s + (1−α) g²;  p ← p − lr g / (√s + ε)."""

    name = "rmsprop"

    def __init__(self, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-8):
        super().__init__(lr)
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"RMSProp alpha must be in [0, 1), got {alpha!r}")
        self.alpha, self.eps = float(alpha), float(eps)

    def hyper(self):
        return {"alpha": self.alpha, "eps": self.eps}

    def init_single(self, xp, param):
        return {"square_avg": xp.zeros_like(param)}

    def apply_single(self, xp, grad, param, state, scalars):
        square_avg = self.alpha * state["square_avg"] + (1.0 - self.alpha) * grad * grad
        return param - scalars["lr"] * grad / (xp.sqrt(square_avg) + self.eps), {"square_avg": square_avg}


#: the registry; the order is the one `mlxrnn train --optimizer` lists (the default first)
OPTIMIZERS = {cls.name: cls for cls in (Adam, AdamW, SGD, RMSProp)}


def make_optimizer(name: str, lr: float, **kwargs: Any) -> Optimizer:
    """An optimizer by name ("sgd", "adam", "adamw", "rmsprop") with learning rate ``lr`` and its own keywords."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr=lr, **kwargs)
