"""mlxrnn: verified recurrent networks with hand-written BPTT on MLX (Metal) or NumPy.

Importing this package loads NumPy only: MLX is imported when the MLX backend is requested,
and click (the CLI's dependency) never.
"""

from __future__ import annotations

__version__ = "0.1.0"

from mlxrnn.backend import auto_choice, get_backend, mlx_installed
from mlxrnn.errors import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    DataError,
    MLXRNNError,
    ShapeError,
    WriteError,
)
from mlxrnn.io import interop
from mlxrnn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from mlxrnn.models.generator import SequenceGenerator, SequenceGeneratorConfig, generator_batch
from mlxrnn.models.seq2seq import Hypothesis, Seq2Seq, Seq2SeqConfig, seq2seq_batch
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.models.spec import RecurrentSpec
from mlxrnn.models.tagger import SequenceTagger, SequenceTaggerConfig
from mlxrnn.nn.cells import GRUCell, LSTMCell, RNNCell, make_cell
from mlxrnn.nn.clip import clip_grad_norm, clip_grad_value, global_norm
from mlxrnn.nn.layers import GRU, LSTM, RNN, Embedding, Linear, Recurrent, lengths_to_mask, make_recurrent, one_hot
from mlxrnn.nn.losses import binary_cross_entropy_with_logits, mean_squared_error, softmax_cross_entropy
from mlxrnn.nn.optim import SGD, Adam, AdamW, Optimizer, RMSProp, make_optimizer
from mlxrnn.training.trainer import StepResult, Trainer

__all__ = [
    "__version__", "interop", "auto_choice", "get_backend", "mlx_installed",
    "RNNCell", "GRUCell", "LSTMCell", "make_cell",
    "RNN", "GRU", "LSTM", "Recurrent", "make_recurrent", "Embedding", "Linear", "one_hot", "lengths_to_mask",
    "softmax_cross_entropy", "binary_cross_entropy_with_logits", "mean_squared_error",
    "clip_grad_norm", "clip_grad_value", "global_norm",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "make_optimizer",
    "SequenceModel", "SequenceModelConfig", "RecurrentSpec", "Trainer", "StepResult",
    "MLXRNNError", "ConfigError", "ShapeError", "DataError", "CheckpointError", "BackendUnavailable", "WriteError",
    "SequenceClassifier", "SequenceClassifierConfig", "SequenceTagger", "SequenceTaggerConfig",
    "Seq2Seq", "Seq2SeqConfig", "Hypothesis", "seq2seq_batch",
    "SequenceGenerator", "SequenceGeneratorConfig", "generator_batch",
]
