"""Training a language model end to end: corpus → batches → Trainer → evaluations → checkpoints.

The loop is char-rnn's truncated BPTT: the corpus is cut into B parallel streams read in
windows of T tokens, and the hidden state at the end of one window is the initial state of the
next (its gradient is not carried back). It stops after a number of epochs or steps, or a
wall-clock budget; evaluates on the validation split every N steps; decays the learning rate on
plateaus (char-rnn, Zaremba et al.) or follows a cosine; stops early when validation stalls;
logs JSON lines to ``RUN_DIR/metrics.jsonl``; keeps ``best`` and ``last`` checkpoints.

Resuming is exact: a checkpoint holds the weights, the optimizer's moments, the carried hidden
state, the dropout RNG's state and the position in the epoch, so on NumPy a resumed run
computes bit-for-bit the losses of an uninterrupted one. Evaluations never touch the training
state (an extra evaluation at the end of a run therefore does not change what follows).

SIGINT and SIGTERM finish the current step, save ``last``, and raise :class:`Interrupted`.
A NaN/Inf loss, or a loss above 3× the first one (char-rnn's rule), raises
:class:`TrainingDiverged` and keeps the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError, MLXRNNError
from mlxrnn.io.checkpoint import load_checkpoint, save_run_checkpoint
from mlxrnn.lm.batching import LMBatcher
from mlxrnn.lm.corpus import bundled_corpus_path, read_text, split_by_fraction
from mlxrnn.lm.model import LanguageModel, language_model_config, language_model_from_meta
from mlxrnn.lm.sampling import perplexity
from mlxrnn.lm.tokenizers import make_tokenizer
from mlxrnn.lm.vocabulary import Vocabulary
from mlxrnn.nn.module import check_positive_int
from mlxrnn.nn.optim import make_optimizer
from mlxrnn.training.distributed import DataParallel
from mlxrnn.training.trainer import Trainer

SCHEDULES = ("plateau", "cosine", "none")
DIVERGENCE_FACTOR = 3.0


class Interrupted(MLXRNNError):
    """Training was stopped by a signal after saving a checkpoint; ``signal_number`` says which."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class TrainingDiverged(MLXRNNError):
    """The loss became NaN/Inf or exploded; the last good checkpoint was kept."""


@dataclass
class TrainOptions:
    """Every setting of a training run (stored in its checkpoints). Defaults: the recommended
    character model (2 × 512 LSTM, embedding 128, batch 32, 128 steps, Adam 2e-3, clip 5)."""

    corpus: str | None = None  #: path of a UTF-8 text; None for the bundled tiny-shakespeare
    encoding: str = "utf-8"
    encoding_errors: str = "strict"  #: "strict" or "replace"
    level: str = "char"
    lowercase: bool = False
    max_vocab: int | None = None  #: word models: keep the most frequent tokens (specials included)
    min_count: int = 1
    cell: str = "lstm"
    cell_options: dict = field(default_factory=dict)
    layers: int = 2
    hidden: int = 512
    embed: int = 128  #: 0 feeds one-hot vectors instead of an embedding
    dropout: float = 0.2
    tie: bool = False
    seq_len: int = 128
    batch_size: int = 32
    lr: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clip: float | None = 5.0
    epochs: float | None = None
    steps: int | None = None
    minutes: float | None = None
    val_frac: float = 0.1
    eval_every: int = 200
    log_every: int = 10
    schedule: str = "plateau"
    lr_decay: float = 0.5  #: plateau: multiply the learning rate by this when validation stalls
    patience: int | None = None  #: stop after this many evaluations without improvement
    backend: str = "auto"
    compile: bool = True  #: MLX: train through the compiled step (False: the eager one, for debugging)
    seed: int = 0

    def validate(self) -> TrainOptions:
        for name in ("layers", "hidden", "seq_len", "batch_size", "eval_every", "log_every", "min_count"):
            check_positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        check_positive_int("--embed", self.embed, minimum=0)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.clip is not None and not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError(f"--clip must be a finite number > 0 (or 0 to disable), got {self.clip}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        check_positive_int("--seed", self.seed, minimum=0)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be True or False (--compile/--no-compile), got {self.compile!r}")
        if not 0.0 < self.val_frac < 1.0:
            raise ConfigError(f"--val-frac must be in (0, 1), got {self.val_frac}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        for name in ("epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1e9:  # also rejects NaN and inf
                raise ConfigError(f"--{name} must be a number in (0, 1e9], got {value}")
        if self.steps is not None:
            check_positive_int("--steps", self.steps)
        if self.patience is not None:
            check_positive_int("--patience", self.patience)
        if self.max_vocab is not None and self.max_vocab < 4:
            raise ConfigError(
                f"--max-vocab must be at least 4 (the 3 special tokens and one word), got {self.max_vocab}"
            )
        return self

    def stopping(self) -> dict:
        """The stop criteria; with none given, one epoch."""
        if self.epochs is None and self.steps is None and self.minutes is None:
            return {"epochs": 1.0, "steps": None, "minutes": None}
        return {"epochs": self.epochs, "steps": self.steps, "minutes": self.minutes}


@dataclass
class Progress:
    """What the progress callback receives after every step (and at evaluations)."""

    step: int
    total_steps: int | None
    epoch: int
    loss: float
    tokens_per_second: float
    elapsed: float
    eta_seconds: float | None
    lr: float
    val_loss: float | None = None
    event: str = "train"


@dataclass
class RunSummary:
    run_dir: str
    steps: int
    epochs_completed: float
    best_val_loss: float | None
    last_val_loss: float | None
    elapsed_seconds: float
    tokens_per_second: float
    stopped_because: str
    level: str

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.level == "char" and self.best_val_loss is not None:
            data["best_val_bpc"] = self.best_val_loss / math.log(2)
        if self.best_val_loss is not None:
            data["best_val_perplexity"] = perplexity(self.best_val_loss)
        return data


# --- data --------------------------------------------------------------------------------------
def load_corpus(options: TrainOptions) -> tuple[str, str]:
    """(text, sha256 of its bytes) of the configured corpus."""
    path = Path(options.corpus) if options.corpus else bundled_corpus_path()
    text = read_text(path, encoding=options.encoding, errors=options.encoding_errors)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_vocabulary(options: TrainOptions, text: str):
    """(tokenizer, vocabulary, tokens). Word vocabularies count only the training split, so a
    word seen only in validation is <UNK> there, as it would be in new text (no leak into the
    validation loss). Character vocabularies use the whole text, as char-rnn does."""
    tokenizer = make_tokenizer(options.level, **({"lowercase": options.lowercase} if options.level == "word" else {}))
    tokens = tokenizer.tokenize(text)
    counted = tokens
    if options.level == "word":
        train_positions, _, _ = split_by_fraction(np.arange(len(tokens)), options.val_frac)
        counted = tokens[: len(train_positions)]
    vocab = Vocabulary.build(counted, max_size=options.max_vocab, min_count=options.min_count, level=options.level)
    return tokenizer, vocab, tokens


def make_batchers(options: TrainOptions, ids: np.ndarray, dist: DataParallel | None = None) -> tuple[Any, Any]:
    dist = dist or DataParallel()
    train_ids, val_ids, _ = split_by_fraction(ids, options.val_frac)
    streams = options.batch_size * dist.size  # data-parallel: ONE batcher of N·B streams, each process its B rows
    train = LMBatcher(train_ids, streams, options.seq_len, name="training split")
    # Validation uses fewer streams when the split is short, so small corpora still evaluate.
    val_streams = max(dist.size, min(streams, (len(val_ids) - 1) // options.seq_len or 1))
    if len(val_ids) < val_streams + 1:
        raise DataError(
            f"the validation split has {len(val_ids)} of the corpus's {len(ids)} tokens, too few to evaluate "
            f"(at least {val_streams + 1} needed); raise --val-frac (now {options.val_frac:g}) or use a longer corpus"
        )
    val = LMBatcher(val_ids, val_streams, options.seq_len, name="validation split")
    return dist.shard_batcher(train), dist.shard_batcher(val)


def evaluate_batches(lm: LanguageModel, batcher: LMBatcher, dist: DataParallel | None = None) -> float:
    """Mean validation NLL per token over every window, carrying the state as in training
    (data-parallel: each process evaluates its rows, and the sums are added up over all)."""
    from mlxrnn.nn.losses import softmax_cross_entropy

    xp, state, total, count = lm.xp, None, 0.0, 0
    for inputs, targets in batcher:
        logits, state, _ = lm.model.forward(inputs, initial_state=state)
        loss, _ = softmax_cross_entropy(xp, logits, targets, reduction="sum")
        total += xp.item(loss)
        count += targets.size
    if dist is not None:
        total, count = dist.sum_values(total, count)
    return total / count


# --- the hidden state carried between windows, stored beside the optimizer tensors ------------
CARRY_PREFIX = "carry/"


def carried_state_tensors(xp, state: Any) -> dict[str, np.ndarray]:
    """The carried recurrent state (an array, an (h, c) pair, or None) as "carry/k" tensors."""
    if state is None:
        return {}
    parts = state if isinstance(state, tuple) else (state,)
    return {f"{CARRY_PREFIX}{k}": xp.to_numpy(part) for k, part in enumerate(parts)}


def split_carried_state(xp, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
    """Inverse of :func:`carried_state_tensors`: (the other tensors, the state or None)."""
    rest = {k: v for k, v in tensors.items() if not k.startswith(CARRY_PREFIX)}
    parts = [xp.from_numpy(tensors[k]) for k in sorted(tensors) if k.startswith(CARRY_PREFIX)]
    if not parts:
        return rest, None
    return rest, (tuple(parts) if len(parts) > 1 else parts[0])


# --- what --force may delete ----------------------------------------------------------------------
_STEP_OR_TMP = re.compile(r"^(step-\d{8,}(-\d+)?|\.tmp-.+-\d+-[0-9a-f]{8})$")
_POINTER_TMP = re.compile(r"^\.tmp-[^/]+\.json-\d+-[0-9a-f]{8}$")


def _first_json(path: Path) -> Any:
    """The JSON value on the first line (or the whole of a small file), None if it is not JSON."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        text = head.decode("utf-8")
        return json.loads(text if path.suffix == ".json" else text.split("\n", 1)[0])
    except (OSError, ValueError, RecursionError):
        return None


def _is_run_entry(path: Path) -> bool:
    """Whether ``path`` is recognisably something `mlxrnn train` wrote (so --force may remove it)."""
    name = path.name
    if _POINTER_TMP.match(name):
        return path.is_file() and not path.is_symlink()
    if name == "checkpoints":
        if path.is_symlink() or not path.is_dir():
            return False
        return all(_STEP_OR_TMP.match(entry.name) for entry in path.iterdir())
    if path.is_symlink():
        return False
    if name not in LanguageModelRun.RUN_FILES or not path.is_file():
        return False
    if path.stat().st_size == 0:  # e.g. killed while writing it: nothing to lose
        return True
    doc = _first_json(path)
    key = {"last.json": "checkpoint", "best.json": "checkpoint", "options.json": "options"}.get(name, "event")
    return isinstance(doc, dict) and key in doc


# --- signals -----------------------------------------------------------------------------------
@contextmanager
def deferred_signals():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (a second Ctrl-C is immediate)."""
    received: list[int] = []
    previous = {}

    def handler(signum, frame):
        if received:  # asked twice: stop now
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay as they are
            pass
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- the run -----------------------------------------------------------------------------------
class LanguageModelRun:
    """One training run in ``run_dir``; :meth:`train` runs it (or continues it after resume)."""

    def __init__(
        self,
        options: TrainOptions,
        run_dir: str | Path,
        resume: bool = False,
        force: bool = False,
        progress: Callable[[Progress], None] | None = None,
        log: Callable[[str], None] | None = None,
        distributed: DataParallel | None = None,
    ):
        self.dist = distributed or DataParallel()  # data-parallel: rank 0 alone prints and writes
        self.run_dir = Path(run_dir)
        self.progress = progress if progress and self.dist.is_main else (lambda p: None)
        self.log = log if log and self.dist.is_main else (lambda message: None)
        if resume or self.dist.is_main:
            self._prepare_run_dir(resume, force)
        if resume:
            self._restore(options)
        else:
            self._start(options.validate())

    #: what a run directory holds; --force removes exactly these and nothing else
    RUN_FILES = ("checkpoints", "last.json", "best.json", "metrics.jsonl", "options.json")

    def _prepare_run_dir(self, resume: bool, force: bool) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--out {self.run_dir} is a file, not a directory; choose another path")
        if resume:
            if not (self.run_dir / "last.json").exists():
                raise DataError(
                    f"cannot resume: {self.run_dir} has no checkpoint (last.json); start a new run without --resume"
                )
            return
        entries = {p.name for p in self.run_dir.iterdir()} if self.run_dir.is_dir() else set()
        if entries and not force:
            raise ConfigError(
                f"run directory {self.run_dir} already exists; pass --resume to continue it, "
                f"--force to replace it, or choose another --out"
            )
        foreign = sorted(name for name in entries if not _is_run_entry(self.run_dir / name))
        if foreign:
            raise ConfigError(
                f"{self.run_dir} holds files that are not an mlxrnn run's ({', '.join(foreign[:3])}); refusing to "
                "replace it even with --force; choose another --out"
            )
        # Nothing is removed yet: _start empties the directory only once the corpus and the model
        # are known to be usable, so a typo in another flag never costs the old run.
        self._replaced_entries = entries

    def _empty_run_dir(self) -> None:
        """--force: remove the old run's own files (checked by _prepare_run_dir), then create the dir."""
        if not self.dist.is_main:
            return
        try:
            for name in getattr(self, "_replaced_entries", ()):
                path = self.run_dir / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"cannot prepare run directory {self.run_dir}: {error.strerror or error}") from None

    def _build(self, options: TrainOptions, text: str, vocab, tokenizer) -> None:
        self.options = options
        config = language_model_config(
            len(vocab),
            cell=options.cell,
            hidden_size=options.hidden,
            num_layers=options.layers,
            embed_size=options.embed,
            dropout=options.dropout,
            tie_weights=options.tie,
            cell_options=options.cell_options,
            seed=options.seed,
        )
        from mlxrnn.models.sequence_model import SequenceModel

        self.lm = LanguageModel(SequenceModel(config, backend=options.backend), vocab, tokenizer)
        self.ids = vocab.encode(tokenizer.tokenize(text))
        self.train_batches, self.val_batches = make_batchers(options, self.ids, self.dist)
        extra = {"weight_decay": options.weight_decay} if options.weight_decay else {}
        self.optimizer = make_optimizer(options.optimizer, options.lr, **extra)
        self.trainer = Trainer(
            self.lm.model,
            self.optimizer,
            clip_norm=options.clip,
            rng=self.dist.dropout_rng(np.random.default_rng(options.seed + 12345)),
            grad_transform=self.dist.average_step if self.dist.size > 1 else None,
            compile=bool(options.compile),
        )

    def _start(self, options: TrainOptions) -> None:
        text, self.corpus_sha = load_corpus(options)
        tokenizer, vocab, _ = build_vocabulary(options, text)
        self._build(options, text, vocab, tokenizer)
        self.state = {
            "step": 0,
            "epoch": 0,
            "window": 0,
            "initial_loss": None,
            "elapsed": 0.0,
            "tokens": 0,
            "best_val": None,
            "sched_best": None,
            "bad_evals": 0,
            "base_lr": options.lr,
            "last_val": None,
        }
        self.carry = None
        self._empty_run_dir()
        self._write_json("options.json", {"options": asdict(options), "vocab_size": len(vocab)})

    def _restore(self, new_options: TrainOptions) -> None:
        checkpoint = load_checkpoint(self.run_dir, tag="last")
        meta = checkpoint.meta
        saved = meta.get("training")
        if not isinstance(saved, dict) or "options" not in saved:
            raise DataError(f"{self.run_dir} was not written by `mlxrnn train`; cannot resume it")
        if saved.get("world_size", 1) != self.dist.size:
            raise ConfigError(
                f"{self.run_dir} was trained by {saved.get('world_size', 1)} process(es), this is {self.dist.size}; "
                f"resume it with as many (mlx.launch -n {saved.get('world_size', 1)} ... --distributed)"
            )
        options = TrainOptions(**saved["options"])
        # Only the stopping criteria (and the backend, compiled or not) may change when resuming.
        for name in ("epochs", "steps", "minutes", "backend", "compile"):
            setattr(options, name, getattr(new_options, name))
        options.validate()
        text, self.corpus_sha = load_corpus(options)
        if self.corpus_sha != saved["corpus_sha256"]:
            raise DataError(
                f"the corpus {options.corpus or 'tiny-shakespeare'} changed since this run started; "
                "resume with the original text or start a new run"
            )
        fresh = language_model_from_meta(meta, backend=options.backend)
        self._build(options, text, fresh.vocab, fresh.tokenizer)
        self.lm.model.load_parameters(checkpoint.weights)
        xp = self.lm.xp
        optimizer_tensors, self.carry = split_carried_state(xp, checkpoint.optimizer_tensors)
        self.carry = self.dist.shard_state(self.carry)  # the checkpoint holds every process's rows
        self.optimizer.load_state_dict(xp, saved["optimizer"], optimizer_tensors)
        self.trainer.rng.bit_generator.state = saved["rng"]
        self.state = dict(saved["state"])
        self.log(f"resuming {self.run_dir} at step {self.state['step']} (epoch {self.state['epoch']})")

    # --- persistence -------------------------------------------------------------------------
    def _write_json(self, name: str, data: dict) -> None:
        if not self.dist.is_main:
            return
        (self.run_dir / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def _metrics(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def save(self, tags: tuple[str, ...] = ("last",)) -> Path:
        xp = self.lm.xp
        carry = self.dist.gather_state(self.carry)  # a collective: every process calls save()
        if not self.dist.is_main:
            return self.run_dir
        scalars, tensors = self.optimizer.state_dict(xp)
        tensors.update(carried_state_tensors(xp, carry))
        meta = self.lm.checkpoint_meta()
        meta["training"] = {
            "options": asdict(self.options),
            "optimizer": scalars,
            "rng": self.trainer.rng.bit_generator.state,
            "state": self.state,
            "corpus_sha256": self.corpus_sha,
            "world_size": self.dist.size,
        }
        meta["metrics"] = {"best_val_loss": self.state["best_val"], "last_val_loss": self.state["last_val"]}
        return save_run_checkpoint(
            self.run_dir,
            self.state["step"],
            self.lm.model.numpy_parameters(),
            meta,
            optimizer_tensors=tensors,
            tags=tags,
        )

    # --- schedule ----------------------------------------------------------------------------
    def _after_scheduled_eval(self, val_loss: float) -> bool:
        """Update the learning-rate schedule and early stopping; True means stop."""
        state, options = self.state, self.options
        if state["sched_best"] is None or val_loss < state["sched_best"] - 1e-4:
            state["sched_best"], state["bad_evals"] = val_loss, 0
            return False
        state["bad_evals"] += 1
        if options.schedule == "plateau":
            self.optimizer.lr *= options.lr_decay
            self.log(f"validation loss did not improve: learning rate → {self.optimizer.lr:.3g}")
        return options.patience is not None and state["bad_evals"] >= options.patience

    def _cosine_lr(self, fraction_done: float) -> float:
        base = self.state["base_lr"]
        return 0.5 * base * (1.0 + math.cos(math.pi * min(max(fraction_done, 0.0), 1.0)))

    def evaluate(self, scheduled: bool) -> tuple[float, bool]:
        val_loss = evaluate_batches(self.lm, self.val_batches, self.dist)
        state = self.state
        improved = state["best_val"] is None or val_loss < state["best_val"]
        state["last_val"] = val_loss
        if improved:
            state["best_val"] = val_loss
        stop = self._after_scheduled_eval(val_loss) if scheduled else False
        record = {
            "event": "eval",
            "step": state["step"],
            "val_loss": val_loss,
            "val_perplexity": perplexity(val_loss),
            "best": improved,
            "lr": self.optimizer.lr,
        }
        if self.options.level == "char":
            record["val_bpc"] = val_loss / math.log(2)
        self._metrics(record)
        self.save(("last", "best") if improved else ("last",))
        return val_loss, stop

    # --- the loop ----------------------------------------------------------------------------
    def train(self) -> RunSummary:
        options, state = self.options, self.state
        stop = options.stopping()
        per_epoch = len(self.train_batches)
        total_steps = None
        if stop["steps"] is not None:
            total_steps = stop["steps"]
        if stop["epochs"] is not None:
            by_epochs = int(math.ceil(stop["epochs"] * per_epoch))
            total_steps = by_epochs if total_steps is None else min(total_steps, by_epochs)
        budget = stop["minutes"] * 60.0 if stop["minutes"] is not None else None
        started, start_step, tokens_run = time.perf_counter(), state["step"], 0
        elapsed_before = state["elapsed"]
        reason = "finished"
        self._metrics(
            {
                "event": "start",
                "step": state["step"],
                "options": asdict(options),
                "steps_per_epoch": per_epoch,
                "backend": self.lm.xp.name,
                "compiled": self.trainer.compiled,
                "processes": self.dist.size,
            }
        )
        with deferred_signals() as received:
            while True:
                if total_steps is not None and state["step"] >= total_steps:
                    reason = "step limit reached" if stop["steps"] == total_steps else "epoch limit reached"
                    break
                run_time = time.perf_counter() - started
                run_time, signals = self.dist.agree(run_time, received)  # data-parallel: all decide alike
                if budget is not None and run_time >= budget:
                    reason = "time budget reached"
                    break
                if signals:
                    self._finish_interrupted(signals[0], started, elapsed_before)
                if options.schedule == "cosine":
                    fraction = state["step"] / total_steps if total_steps else run_time / budget
                    self.optimizer.lr = self._cosine_lr(fraction)
                inputs, targets = self.train_batches.window(state["window"])
                result = self.trainer.step({"inputs": inputs, "targets": targets, "initial_state": self.carry})
                self._check_divergence(result.loss)
                self.carry = result.aux["final_state"]
                state["step"] += 1
                tokens = targets.size * self.dist.size  # every process's rows of the window
                state["tokens"] += tokens
                tokens_run += tokens
                state["window"] += 1
                if state["window"] >= per_epoch:  # a new epoch starts from a zero state
                    state["window"], state["epoch"], self.carry = 0, state["epoch"] + 1, None
                now = time.perf_counter() - started
                state["elapsed"] = elapsed_before + now
                speed = tokens_run / max(now, 1e-9)
                self._report_step(result, total_steps, budget, now, speed, start_step)
                if state["step"] % options.eval_every == 0:
                    val_loss, early = self.evaluate(scheduled=True)
                    self.progress(
                        Progress(
                            state["step"],
                            total_steps,
                            state["epoch"],
                            result.loss,
                            speed,
                            now,
                            None,
                            self.optimizer.lr,
                            val_loss=val_loss,
                            event="eval",
                        )
                    )
                    if early:
                        reason = f"early stopping: no improvement in {options.patience} evaluations"
                        break
            if state["step"] % options.eval_every != 0 or state["step"] == start_step:
                self.evaluate(scheduled=False)  # saves; a signal meanwhile is acted on just below
            _, signals = self.dist.agree(time.perf_counter() - started, received)
            if signals:
                self._finish_interrupted(signals[0], started, elapsed_before)
        elapsed = time.perf_counter() - started
        summary = RunSummary(
            str(self.run_dir),
            state["step"],
            state["epoch"] + state["window"] / per_epoch,
            state["best_val"],
            state["last_val"],
            state["elapsed"],
            tokens_run / max(elapsed, 1e-9),
            reason,
            options.level,
        )
        self._metrics({"event": "end", **summary.to_dict()})
        return summary

    def _report_step(self, result, total_steps, budget, now, speed, start_step) -> None:
        state = self.state
        done = state["step"] - start_step
        eta = None
        if total_steps is not None:
            eta = (total_steps - state["step"]) * now / max(done, 1)
        if budget is not None:
            eta = min(eta, budget - now) if eta is not None else budget - now
        clips, steps = getattr(self, "_clip_count", (0, 0))  # since the previous train record
        self._clip_count = (clips + bool(result.clipped), steps + 1)
        if state["step"] % self.options.log_every == 0:
            clips, steps = self._clip_count
            self._clip_count = (0, 0)
            self._metrics(
                {
                    "event": "train",
                    "step": state["step"],
                    "epoch": state["epoch"],
                    "loss": result.loss,
                    "grad_norm": result.grad_norm,
                    "clipped": result.clipped,
                    "clip_rate": clips / steps,  # fraction of the steps since the last record that clipped
                    "lr": self.optimizer.lr,
                    "tokens_per_second": speed,
                    "elapsed": state["elapsed"],
                }
            )
        self.progress(
            Progress(state["step"], total_steps, state["epoch"], result.loss, speed, now, eta, self.optimizer.lr)
        )

    def _check_divergence(self, loss: float) -> None:
        state = self.state
        if state["initial_loss"] is None and math.isfinite(loss):
            state["initial_loss"] = loss
        limit = DIVERGENCE_FACTOR * (state["initial_loss"] or math.inf)
        if not math.isfinite(loss) or loss > limit:
            what = "became " + str(loss) if not math.isfinite(loss) else f"rose to {loss:.3f} (over 3× the first loss)"
            self._metrics(
                {"event": "diverged", "step": state["step"] + 1, "loss": loss if math.isfinite(loss) else None}
            )
            kept = (
                f"the last good checkpoint is kept in {self.run_dir}"
                if (self.run_dir / "last.json").exists()
                else "no checkpoint had been saved yet"
            )
            clip = f"a smaller --clip (now {self.options.clip:g})" if self.options.clip else "--clip 5"
            raise TrainingDiverged(
                f"training stopped at step {state['step'] + 1}: the loss {what}; {kept}; "
                f"try a lower --lr (now {self.optimizer.lr:g}) or {clip}"
            )

    def _finish_interrupted(self, signum: int, started: float, elapsed_before: float) -> None:
        self.state["elapsed"] = elapsed_before + time.perf_counter() - started
        path = self.save(("last",))
        name = signal.Signals(signum).name
        self._metrics({"event": "interrupted", "step": self.state["step"], "signal": name})
        self.dist.barrier()  # no process exits (mlx.launch then stops the rest) before rank 0 has saved
        raise Interrupted(
            f"{name} received: saved step {self.state['step']} to {path}; "
            f"continue with: mlxrnn train --resume --out {self.run_dir}",
            signum,
        )


def train_language_model(options: TrainOptions, run_dir: str | Path, **kwargs: Any) -> RunSummary:
    """Train (or with ``resume=True`` continue) a language model in ``run_dir``."""
    return LanguageModelRun(options, run_dir, **kwargs).train()
