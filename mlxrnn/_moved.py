"""Import paths of earlier releases, kept working with a DeprecationWarning that names the new one.

0.1.0 kept every module at the top (``mlxrnn.cells``, ``mlxrnn.interop``, ``mlxrnn.lm_train``...);
0.2.0 groups them in folders that are layers (README.md, Layout). Two kinds of alias:

- a whole module that moved (:data:`MODULES`, e.g. ``mlxrnn.lm.run`` -> ``mlxrnn.run.loop``):
  importing the old path gives a module holding every name of the new one;
- a 0.1.0 module whose names went to several places (:data:`NAMES`, e.g. ``mlxrnn.data``): the
  alias module holds exactly the names it had, each taken from where it lives now. For 0.1.0
  modules that are packages today (``mlxrnn.lm``, ``mlxrnn.models``, ``mlxrnn.bench``), the
  package's ``__getattr__`` answers the old names through :func:`moved_name`.

``mlxrnn.sample`` is the exception: it is the public function :func:`mlxrnn.sample`, and an
alias module of that name would replace the function on the package once imported; 0.1.0's
``mlxrnn/sample.py`` names are in :mod:`mlxrnn.lm.sampling` and :mod:`mlxrnn.lm.evaluation`.

The new modules are imported by name (``importlib``) when an alias is used, so this table, the
bottom layer of the package, depends on nothing. ``mlxrnn/__init__.py`` installs the finder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

#: the release that moved them, and the one that will drop the aliases
MOVED_IN, REMOVED_IN = "0.2.0", "1.0"

#: module paths of 0.1.x that moved whole
MODULES: dict[str, str] = {
    "mlxrnn.interop": "mlxrnn.io.interop",
    "mlxrnn.lm.tokenizers": "mlxrnn.text.tokenizers",
    "mlxrnn.lm.vocabulary": "mlxrnn.text.vocabulary",
    "mlxrnn.lm.corpus": "mlxrnn.text.corpus",
    "mlxrnn.lm.batching": "mlxrnn.text.batching",
    "mlxrnn.lm.run": "mlxrnn.run.loop",
    "mlxrnn.lm.options": "mlxrnn.run.options",
    "mlxrnn.lm.option_files": "mlxrnn.run.option_files",
    "mlxrnn.lm.resume": "mlxrnn.run.resume",
    "mlxrnn.lm.run_state": "mlxrnn.run.state",
    "mlxrnn.lm.run_data": "mlxrnn.run.data",
    "mlxrnn.lm.carried_state": "mlxrnn.run.carried_state",
    "mlxrnn.lm.init_from": "mlxrnn.run.init_from",
    "mlxrnn.lm.metrics": "mlxrnn.run.metrics",
}

#: 0.1.0 module -> {new module: "names it holds now"}; packages that still exist (lm, models, bench)
#: answer their old names through a module ``__getattr__``, the rest are alias modules.
NAMES: dict[str, dict[str, str]] = {
    "mlxrnn.bench": {
        "mlxrnn.bench.harness": (
            "BenchSettings BenchmarkError IMPLS OWN_IMPLS PEER_IMPLS available machine_info "
            "make_workload run_benchmarks run_worker sgemm_gflops split_list time_calls "
            "wait_until_quiet"
        ),
        "mlxrnn.bench.sizes": "CELLS CELL_OPTIONS SIZES Shape TASKS gemm_flops parse_size tokens_per_call",
        "mlxrnn.bench.peers": "MLXNNWorkload TorchWorkload",
        "mlxrnn.bench.workloads": "MlxrnnWorkload Workload sample_tokens",
        "mlxrnn.bench.report": "format_summary format_table",
    },
    "mlxrnn.blocks": {
        "mlxrnn.models.blocks": (
            "INPUT_KINDS InputEncoder batch_mask bridge_state bridge_state_backward "
            "top_final_hidden top_final_hidden_backward"
        ),
    },
    "mlxrnn.cells": {
        "mlxrnn.nn.cells": "Cache Cell GRUCell LSTMCell Params RNNCell make_cell",
    },
    "mlxrnn.checkpoint": {
        "mlxrnn.io.checkpoint.format": (
            "CHECKPOINTS_SUBDIR Checkpoint FORMAT_VERSION LIBRARY META_FILE MODEL_FILE "
            "OPTIMIZER_FILE"
        ),
        "mlxrnn.io.checkpoint.load": "check_weights load_checkpoint",
        "mlxrnn.io.checkpoint.pointers": "list_checkpoints resolve_checkpoint save_run_checkpoint",
        "mlxrnn.io.checkpoint.durable": "save_checkpoint",
    },
    "mlxrnn.classifier": {
        "mlxrnn.models.classifier": "HEADS POOLINGS SequenceClassifier SequenceClassifierConfig",
    },
    "mlxrnn.clip": {
        "mlxrnn.nn.clip": "clip_grad_norm clip_grad_value global_norm",
    },
    "mlxrnn.data": {
        "mlxrnn.text.tokenizers": "CharTokenizer LEVELS Tokenizer WordTokenizer make_tokenizer",
        "mlxrnn.nn.sequences": "EOS PAD SPECIAL_TOKENS UNK pad_sequences",
        "mlxrnn.text.batching": "LMBatcher",
        "mlxrnn.text.vocabulary": "Vocabulary",
        "mlxrnn.text.corpus": "bundled_corpus_path read_text split_by_fraction",
        "mlxrnn.nn.dense": "one_hot",
    },
    "mlxrnn.distributed": {
        "mlxrnn.training.distributed": (
            "DataParallel MLX_MISSING ShardedBatcher ShardedDropoutRNG init_distributed "
            "launched"
        ),
    },
    "mlxrnn.generator": {
        "mlxrnn.models.generator": "CONDITION_KINDS SequenceGenerator SequenceGeneratorConfig generator_batch",
    },
    "mlxrnn.layers": {
        "mlxrnn.nn.direction_loops": "DIRECTION_NAMES TokenInputs",
        "mlxrnn.nn.dense": "Embedding Linear check_token_ids one_hot",
        "mlxrnn.nn.layers": "GRU LSTM RNN Recurrent RecurrentCache lengths_to_mask make_recurrent",
    },
    "mlxrnn.lm": {
        "mlxrnn.lm.model": "LanguageModel language_model_from_meta load_language_model",
        "mlxrnn.lm.network": "LM_KIND language_model_config",
    },
    "mlxrnn.lm_train": {
        "mlxrnn.run.carried_state": "CARRY_PREFIX carried_state_tensors split_carried_state",
        "mlxrnn.run.loop": "DIVERGENCE_FACTOR LanguageModelRun train_language_model",
        "mlxrnn.errors": "Interrupted TrainingDiverged",
        "mlxrnn.run.state": "Progress RunSummary",
        "mlxrnn.nn.schedules": "SCHEDULES",
        "mlxrnn.run.options": "TrainOptions",
        "mlxrnn.run.data": "build_vocabulary load_corpus make_batchers",
        "mlxrnn.training.signals": "deferred_signals",
    },
    "mlxrnn.losses": {
        "mlxrnn.nn.losses": (
            "LOSSES REDUCTIONS binary_cross_entropy_with_logits get_loss mean_squared_error "
            "softmax_cross_entropy"
        ),
    },
    "mlxrnn.models": {
        "mlxrnn.models.blocks": "INPUT_KINDS",
        "mlxrnn.models.sequence_model": "OUTPUT_KINDS SequenceModel SequenceModelConfig",
    },
    "mlxrnn.module": {
        "mlxrnn.nn.module": "Module check_positive_int check_probability",
    },
    "mlxrnn.optim": {
        "mlxrnn.nn.optim": "Adam AdamW OPTIMIZERS Optimizer RMSProp SGD make_optimizer",
    },
    "mlxrnn.seq2seq": {
        "mlxrnn.models.seq2seq": "Seq2Seq Seq2SeqConfig seq2seq_batch",
        "mlxrnn.models.seq2seq_decoding": "Hypothesis",
    },
    "mlxrnn.tagger": {
        "mlxrnn.models.tagger": "HEADS SequenceTagger SequenceTaggerConfig",
    },
    "mlxrnn.train": {
        "mlxrnn.training.trainer": "StepResult TrainableModel Trainer check_batch",
    },
}


#: 0.1.0 modules that are packages today: their ``__getattr__`` calls :func:`moved_name`
PACKAGES = ("mlxrnn.lm", "mlxrnn.models", "mlxrnn.bench")


def _warn(message: str, stacklevel: int) -> None:
    # stacklevel counts from the caller of _warn; importlib's own frames are skipped by warnings
    warnings.warn(f"{message} (the old path goes in mlxrnn {REMOVED_IN})", DeprecationWarning,
                  stacklevel=stacklevel + 1)


def _where(package: str, name: str) -> str | None:
    for module, names in NAMES.get(package, {}).items():
        if name in names.split():
            return module
    return None


def moved_name(package: str, name: str) -> Any:
    """``package.name`` of 0.1.0 (``mlxrnn.lm.LanguageModel``), from where it lives now, with a warning."""
    module = _where(package, name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    # 3: past moved_name and the package's __getattr__, to the line that named the old path
    _warn(f"{package}.{name} moved to {module}.{name} in mlxrnn {MOVED_IN}; import it from there", 3)
    return getattr(importlib.import_module(module), name)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths (and only those) and builds their alias modules."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in MODULES or (fullname in NAMES and fullname not in PACKAGES):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        if old in MODULES:
            # the old name becomes the new module itself (importlib keeps what exec_module leaves
            # in sys.modules), so `mlxrnn.interop is mlxrnn.io.interop` stays true
            sys.modules[old] = importlib.import_module(MODULES[old])
            _warn(f"{old} moved to {MODULES[old]} in mlxrnn {MOVED_IN}; import from there", 2)
            return
        for where, names in NAMES[old].items():
            source = importlib.import_module(where)
            for name in names.split():
                setattr(module, name, getattr(source, name))
        module.__doc__ = f"Deprecated 0.1.0 module; its names now live in {', '.join(NAMES[old])}."
        _warn(f"{old} was split in mlxrnn {MOVED_IN}; its names now live in {', '.join(NAMES[old])}", 2)


_FINDER = _AliasFinder()


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
