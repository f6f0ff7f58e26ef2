"""A recurrent layer one time step at a time, without caches: what sampling runs per token.

A mixin of :class:`~mlxrnn.nn.layers.Recurrent` (unidirectional stacks only: a backward
direction needs the whole sequence). Per layer l, with the cell's fused weights:

    x_proj = x W_x + b          (B, G·H)   layer 0's can be a row of project_inputs(table)
    state_l = cell.step(x_proj, state_l)   h_l (B, H) feeds layer l + 1
"""

from __future__ import annotations

from typing import Any

from mlxrnn.errors import ConfigError, ShapeError


class SingleSteps:
    """:meth:`step` and :meth:`project_inputs` of :class:`~mlxrnn.nn.layers.Recurrent`."""

    def project_inputs(self, x: Any) -> Any:
        """Layer 0's input projection x W_x + b: x (..., D) -> (..., G·H), unidirectional stacks.

        Projecting a whole embedding table (V, D) once turns every later step's input
        projection into a row lookup: pass ``x_proj=table[ids]`` to :meth:`step`.
        """
        self._check_steppable()
        params = self._direction_params(0, 0)
        return self.xp.matmul(x, params["W_x"]) + params["b"]

    def step(self, x: Any = None, state: Any = None, x_proj: Any = None) -> tuple[Any, Any]:
        """Advance a unidirectional stack by one time step, keeping no caches (inference).

        Args:
            x: (B, D) this step's inputs; or None when ``x_proj`` is given.
            state: the state returned by the previous call (public layout: (L, B, H), or
                (h, c) for an LSTM), or None for zeros.
            x_proj: (B, G·H) layer 0's input projection, e.g. rows of :meth:`project_inputs`.
        Returns:
            (h (B, H) the top layer's output, the new state in the public layout). The same
            numbers as ``forward(x[:, None], initial_state=state)`` without its caches and checks.
        """
        self._check_steppable()
        xp = self.xp
        if (x is None) == (x_proj is None):
            raise ConfigError("give exactly one of x (inputs) and x_proj (projected inputs) to step")
        rows = int((x if x_proj is None else x_proj).shape[0])
        if rows < 1:
            raise ShapeError("x holds no sequences (batch size 0); pass at least one")
        parts = self._state_parts(state, rows)
        if state is None:
            parts = [xp.zeros((self.num_layers, rows, self.hidden_size))] * self.state_size
        new_states = []
        for layer, cell in enumerate(self.cells):
            params = self._direction_params(layer, 0)
            if layer > 0 or x_proj is None:
                x_proj = xp.matmul(x, params["W_x"]) + params["b"]
            new_state, _ = cell.step(xp, params, x_proj, tuple([part[layer] for part in parts]))
            new_states.append(new_state)
            x = new_state[0]
        if len(new_states) == 1:  # one layer: add the layer axis as a view
            return x, self._public_state([part[None] for part in new_states[0]])
        return x, self._public_state([xp.stack(part, axis=0) for part in zip(*new_states)])

    def _check_steppable(self) -> None:
        if self.bidirectional:
            raise ConfigError("a bidirectional layer cannot run one step at a time: its backward direction needs "
                              "the whole sequence")
