"""The peers mlxrnn is measured against, as benchmark workloads (used only when installed).

* ``torch``: ``torch.nn.LSTM/GRU/RNN`` on the CPU with its default thread count,
  ``clip_grad_norm_`` and ``torch.optim.Adam``; sampling with ``torch.multinomial``.
* ``mlx.nn``: MLX's own layers, ``nn.value_and_grad``, ``optimizers.clip_grad_norm`` and
  ``optimizers.Adam``, eagerly; ``mlx.nn-compiled`` compiles the whole training step over the
  model and optimizer state as mlx-examples do (``mx.compile(step, inputs=state,
  outputs=state)``, one ``mx.eval`` per step). Both sample eagerly, one ``mx.random.categorical``
  and one ``.item()`` per token, as mlx.nn users write it.

GRUs are PyTorch's and mlx.nn's ``reset_after`` form, which the bench also gives mlxrnn's GRU,
so every implementation does the same work.
"""

from __future__ import annotations

from mlxrnn.bench.sizes import Shape
from mlxrnn.bench.workloads import Workload, count_graph_nodes, lm_batch


class TorchWorkload(Workload):
    """The same network in PyTorch (CPU, default threads): nn.Embedding → nn.LSTM/GRU/RNN →
    nn.Linear, cross_entropy, clip_grad_norm_(1.0), Adam(lr=1e-3)."""

    def __init__(self, cell: str, shape: Shape, seed: int = 0):
        import torch

        self.torch, self.shape = torch, shape
        torch.manual_seed(seed)
        layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.embedding = torch.nn.Embedding(shape.vocab, shape.embed)
        self.rnn = layer(shape.embed, shape.hidden, num_layers=shape.layers, batch_first=True)
        self.head = torch.nn.Linear(shape.hidden, shape.vocab)
        self.params = [p for m in (self.embedding, self.rnn, self.head) for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)
        batch = lm_batch(shape, seed)
        self.inputs, self.targets = (torch.from_numpy(batch[k]).long() for k in ("inputs", "targets"))
        self.generator = torch.Generator().manual_seed(seed)

    def train_step(self) -> None:
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        hidden, _ = self.rnn(self.embedding(self.inputs))
        logits = self.head(hidden)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.shape.vocab), self.targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        loss.item()

    def forward(self) -> None:
        with self.torch.inference_mode():
            self.head(self.rnn(self.embedding(self.inputs))[0]).sum().item()

    def sample(self, num_tokens: int) -> None:
        torch = self.torch
        token, state = torch.zeros((1, 1), dtype=torch.long), None
        with torch.inference_mode():
            for _ in range(num_tokens):
                hidden, state = self.rnn(self.embedding(token), state)
                probs = torch.softmax(self.head(hidden[:, -1]), dim=-1)
                token = torch.multinomial(probs, 1, generator=self.generator)
                token.item()


class MLXNNWorkload(Workload):
    """The same network with MLX's own layers: nn.Embedding → nn.LSTM/GRU/RNN (stacked) →
    nn.Linear, nn.losses.cross_entropy, optimizers.clip_grad_norm(1.0), optimizers.Adam(1e-3),
    gradients from ``nn.value_and_grad``; ``compiled`` compiles the whole step (MLX's recipe)."""

    def __init__(self, cell: str, shape: Shape, seed: int = 0, compiled: bool = False):
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim

        self.mx = mx
        mx.random.seed(seed)
        layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.cell = cell

        class LM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(shape.vocab, shape.embed)
                self.layers = [layer(shape.embed if i == 0 else shape.hidden, shape.hidden)
                               for i in range(shape.layers)]
                self.head = nn.Linear(shape.hidden, shape.vocab)

            def __call__(self, ids, states=None):
                x, new_states = self.embedding(ids), []
                for i, rnn in enumerate(self.layers):
                    args = () if states is None else states[i]
                    out = rnn(x, *args)
                    if cell == "lstm":  # (all hidden, all cell) states
                        x = out[0]
                        new_states.append((out[0][:, -1], out[1][:, -1]))
                    else:
                        x = out
                        new_states.append((out[:, -1],))
                return self.head(x), new_states

        self.model = LM()
        self.optimizer = optim.Adam(learning_rate=1e-3)
        batch = lm_batch(shape, seed)
        self.inputs, self.targets = mx.array(batch["inputs"]), mx.array(batch["targets"])

        def loss_fn(model, ids, targets):
            return nn.losses.cross_entropy(model(ids)[0], targets, reduction="mean")

        loss_and_grad = nn.value_and_grad(self.model, loss_fn)

        def step(ids, targets):
            loss, grads = loss_and_grad(self.model, ids, targets)
            grads, _ = optim.clip_grad_norm(grads, 1.0)
            self.optimizer.update(self.model, grads)
            return loss

        if compiled:
            self.optimizer.init(self.model.trainable_parameters())  # a fixed state tree: no recompiles
            state = [self.model.state, self.optimizer.state]
            step = mx.compile(step, inputs=state, outputs=state)
        self._step = step

    def train_step(self) -> None:
        loss = self._step(self.inputs, self.targets)
        self.mx.eval(loss, self.model.parameters(), self.optimizer.state)
        loss.item()

    def graph_nodes(self) -> int:
        loss = self._step(self.inputs, self.targets)
        nodes = count_graph_nodes([loss], self.model.parameters(), self.optimizer.state)
        self.mx.eval(loss, self.model.parameters(), self.optimizer.state)
        return nodes

    def forward(self) -> None:
        logits, _ = self.model(self.inputs)
        self.mx.eval(logits)

    def sample(self, num_tokens: int) -> None:
        mx = self.mx
        token, states = mx.zeros((1, 1), dtype=mx.int32), None
        for _ in range(num_tokens):
            logits, states = self.model(token, states)
            token = mx.random.categorical(logits[:, -1])[None]
            token.item()
