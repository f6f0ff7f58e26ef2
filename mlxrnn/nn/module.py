"""The parameter container every layer and model builds on.

A :class:`Module` owns a flat ``params`` dict of backend arrays and named child modules.
:meth:`Module.parameters` flattens the tree into ``{"child.name": array}``, the one format
optimizers, clipping, checkpoints and gradients all share; :meth:`Module.load_parameters`
writes such a dict back (MLX arrays are immutable, so updates replace rather than mutate).

Modules behave as in PyTorch and mlx.nn where that costs nothing: calling one runs its
``forward`` and returns the results without the cache kept for the backward pass (a layer
returns ``(outputs, final_state)``, a ``Linear`` its ``y``), and the ``repr`` shows the sizes,
the parameter count and the children.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from mlxrnn.backend import get_backend
from mlxrnn.errors import CheckpointError, ConfigError


class Module:
    """Base class: a backend, own parameters, child modules."""

    def __init__(self, backend: Any = None, dtype: str = "float32"):
        self.xp = get_backend(backend, dtype) if not hasattr(backend, "matmul") else backend
        self.params: dict[str, Any] = {}
        self._children: dict[str, Module] = {}

    def add_child(self, name: str, module: Module) -> Module:
        """Register ``module`` as a child called ``name`` (also set as an attribute); returns it."""
        self._children[name] = module
        setattr(self, name, module)
        return module

    def _set_numpy_params(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Store freshly drawn float64 NumPy parameters in this module's backend and dtype."""
        self.params = {name: self.xp.from_numpy(value) for name, value in arrays.items()}

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(prefix, module) for this module and every descendant, depth first; prefixes end in "."."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def parameters(self) -> dict[str, Any]:
        """All parameters of the tree as ``{"child.sub.name": array}`` (insertion-ordered)."""
        flat: dict[str, Any] = {}
        for prefix, module in self.named_modules():
            for name, value in module.params.items():
                flat[prefix + name] = value
        return flat

    def load_parameters(self, flat: Mapping[str, Any], strict: bool = True) -> None:
        """Replace parameters by name; shapes must match. Arrays may be NumPy or backend arrays."""
        current = self.parameters()
        if strict:
            missing = [n for n in current if n not in flat]
            unexpected = [n for n in flat if n not in current]
            if missing or unexpected:
                raise CheckpointError(
                    f"parameter names do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
                )
        for prefix, module in self.named_modules():
            for name in list(module.params):
                key = prefix + name
                if key not in flat:
                    continue
                value = flat[key]
                if tuple(value.shape) != tuple(module.params[name].shape):
                    raise CheckpointError(
                        f"parameter {key!r} has shape {tuple(value.shape)}; the model expects "
                        f"{tuple(module.params[name].shape)}"
                    )
                if isinstance(value, np.ndarray):
                    value = self.xp.from_numpy(value)
                module.params[name] = value

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of every parameter, named as :meth:`parameters` names them."""
        return {name: tuple(value.shape) for name, value in self.parameters().items()}

    def num_parameters(self) -> int:
        """The number of scalar parameters in the whole tree."""
        return int(sum(int(np.prod(shape)) for shape in self.parameter_shapes().values()))

    def numpy_parameters(self) -> dict[str, np.ndarray]:
        """A NumPy copy of every parameter (for checkpoints and cross-backend comparisons)."""
        return {name: self.xp.to_numpy(value) for name, value in self.parameters().items()}

    # --- as the frameworks do -----------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``forward(*args, **kwargs)`` without its last result, the cache for ``backward``.

        So ``layer(x)`` is ``(outputs, final_state)`` as in PyTorch, ``linear(x)`` is y, and a
        model's call is its logits (and final state where its forward returns one).
        """
        *results, _cache = self.forward(*args, **kwargs)
        return results[0] if len(results) == 1 else tuple(results)

    def extra_repr(self) -> str:
        """The sizes and settings shown inside ``Name(...)`` (subclasses say what defines them)."""
        return ""

    def io_sizes(self) -> tuple[int, int] | None:
        """(features in, features out) for :meth:`summary`-style tables, when the module has them."""
        return None

    def __repr__(self) -> str:
        return "\n".join(self._repr_lines(top=True))

    def _repr_lines(self, top: bool) -> list[str]:
        count = f"{self.num_parameters():,} parameters"
        if top:  # where the numbers live matters once, not on every line
            count += f", {self.xp.name} {self.xp.dtype_name}"
        inside = "; ".join(part for part in (self.extra_repr(), count) if part)
        lines = [f"{type(self).__name__}({inside})"]
        for name, child in self._children.items():
            child_lines = child._repr_lines(top=False)
            lines.append(f"  ({name}): {child_lines[0]}")
            lines.extend("  " + line for line in child_lines[1:])
        return lines


def check_positive_int(label: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(label: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{label} must be a number in [0, 1), got {value!r}")
    return float(value)
