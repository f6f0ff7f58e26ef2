"""A language model's training run: options, the loop, resume, metrics, carried state.

``mlxrnn train`` and :func:`mlxrnn.train_language_model` both go through
:mod:`mlxrnn.run.loop`."""
