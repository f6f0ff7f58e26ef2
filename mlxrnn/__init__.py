"""mlxrnn: verified recurrent networks with hand-written BPTT on MLX (Metal) or NumPy.

Importing this package loads NumPy only: MLX is imported when the MLX backend is requested,
and click (the CLI's dependency) never.

From Python as from the command line:

    summary = mlxrnn.train_language_model(corpus="my.txt", run_dir="runs/mine", steps=500)   # mlxrnn train
    lm = mlxrnn.load(summary.run_dir)                 # a LanguageModel (or any model saved with .save)
    lm.sample(prime="ROMEO:", seed=1)                 # mlxrnn sample
    lm.score(["a sentence", "another"]), lm.evaluate(text)   # mlxrnn score / eval
    mlxrnn.prepare_corpus("big.txt", "data/big", tokenizer="bpe")  # mlxrnn prepare; then corpus="data/big"
    model = mlxrnn.SequenceClassifier(input_size=43, hidden_size=48)
    history = model.fit(train, validation=held_out, epochs=5, callbacks=[mlxrnn.EarlyStopping()])
    model.save("models/sentiment", overwrite=True); mlxrnn.SequenceClassifier.load("models/sentiment")
    ids, lengths = mlxrnn.pad_sequences([[5, 2, 9], [4]]); mlxrnn.from_torch(torch_lstm)   # data, interop
"""

from __future__ import annotations

__version__ = "0.2.0"

from mlxrnn import _moved
from mlxrnn.backend import auto_choice, get_backend, mlx_installed
from mlxrnn.errors import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    DataError,
    Interrupted,
    MLXRNNError,
    ShapeError,
    TrainingDiverged,
    WriteError,
)
from mlxrnn.io import interop
from mlxrnn.io.interop import from_keras, from_mlx_nn, from_torch, to_keras, to_mlx_nn, to_torch
from mlxrnn.io.model_files import load
from mlxrnn.lm.evaluation import Evaluation, evaluate_text
from mlxrnn.lm.model import LanguageModel, load_language_model
from mlxrnn.lm.sampling import Samples, SentenceScore, sample, score
from mlxrnn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.models.generator import SequenceGenerator, SequenceGeneratorConfig, generator_batch
from mlxrnn.models.gradflow import GradientFlow, gradient_flow
from mlxrnn.models.seq2seq import Seq2Seq, Seq2SeqConfig, seq2seq_batch
from mlxrnn.models.seq2seq_decoding import Hypothesis
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.models.spec import RecurrentSpec
from mlxrnn.models.tagger import SequenceTagger, SequenceTaggerConfig
from mlxrnn.nn.cells import GRUCell, LSTMCell, RNNCell, make_cell
from mlxrnn.nn.clip import clip_grad_norm, clip_grad_value, global_norm
from mlxrnn.nn.layers import GRU, LSTM, RNN, Embedding, Linear, Recurrent, lengths_to_mask, make_recurrent, one_hot
from mlxrnn.nn.losses import binary_cross_entropy_with_logits, mean_squared_error, softmax_cross_entropy
from mlxrnn.nn.optim import SGD, Adam, AdamW, Optimizer, RMSProp, make_optimizer
from mlxrnn.nn.sequences import pad_sequences
from mlxrnn.run.loop import Progress, RunSummary, train_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.bpe import BPETokenizer, train_bpe
from mlxrnn.text.prepare import prepare_corpus
from mlxrnn.text.prepared import PreparedCorpus, open_prepared
from mlxrnn.training.callbacks import Callback, EarlyStopping, LearningRateSchedule, ProgressBar, RestoreBestWeights
from mlxrnn.training.fit import History
from mlxrnn.training.trainer import StepResult, Trainer

_moved.install()  # 0.1.0's import paths keep working, with a DeprecationWarning (mlxrnn/_moved.py)

__all__ = [
    "__version__", "interop", "auto_choice", "get_backend", "mlx_installed",
    "RNNCell", "GRUCell", "LSTMCell", "make_cell",
    "RNN", "GRU", "LSTM", "Recurrent", "make_recurrent", "Embedding", "Linear", "one_hot", "lengths_to_mask",
    "softmax_cross_entropy", "binary_cross_entropy_with_logits", "mean_squared_error",
    "clip_grad_norm", "clip_grad_value", "global_norm",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "make_optimizer",
    "SequenceModel", "SequenceModelConfig", "RecurrentSpec", "Trainer", "StepResult",
    "MLXRNNError", "ConfigError", "ShapeError", "DataError", "CheckpointError", "BackendUnavailable", "WriteError",
    "TrainingDiverged", "Interrupted",
    "SequenceClassifier", "SequenceClassifierConfig", "SequenceTagger", "SequenceTaggerConfig",
    "Seq2Seq", "Seq2SeqConfig", "Hypothesis", "seq2seq_batch",
    "SequenceGenerator", "SequenceGeneratorConfig", "generator_batch",
    "GradientFlow", "gradient_flow",
    # trained runs and saved models
    "load", "LanguageModel", "load_language_model", "train_language_model", "TrainOptions", "Progress", "RunSummary",
    "sample", "score", "evaluate_text", "Samples", "SentenceScore", "Evaluation", "SamplingOptions",
    # your own corpus: prepared once, memory-mapped; a subword tokenizer
    "prepare_corpus", "open_prepared", "PreparedCorpus", "train_bpe", "BPETokenizer",
    # fit
    "History", "Callback", "EarlyStopping", "RestoreBestWeights", "LearningRateSchedule", "ProgressBar",
    # data and other frameworks' weights
    "pad_sequences", "from_torch", "to_torch", "from_keras", "to_keras", "from_mlx_nn", "to_mlx_nn",
]
