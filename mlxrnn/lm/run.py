"""Training a language model end to end: corpus → batches → Trainer → evaluations → checkpoints.

The loop is char-rnn's truncated BPTT: the corpus is cut into B parallel streams read in
windows of T tokens, and the hidden state at the end of one window is the initial state of the
next (its gradient is not carried back). It stops after a number of epochs or steps, or a
wall-clock budget; evaluates on the validation split every N steps; sets the learning rate by a
schedule (:mod:`mlxrnn.nn.schedules`); stops early when validation stalls; logs JSON lines to
``RUN_DIR/metrics.jsonl``; keeps ``best`` and ``last`` checkpoints.

Resuming is exact: a checkpoint holds the weights, the optimizer's moments, the schedule's
memory, the dropout RNG's state and the :class:`~mlxrnn.lm.run_state.RunState` (position in the
epoch, carried hidden state, counters), so on NumPy a resumed run computes bit-for-bit the
losses of an uninterrupted one. Evaluations never touch the training state (an extra evaluation
at the end of a run therefore does not change what follows).

SIGINT, SIGTERM and SIGHUP finish the current step, save ``last``, and raise :class:`Interrupted`.
A NaN/Inf loss, or a loss above 3× the first one (char-rnn's rule), raises
:class:`TrainingDiverged` and keeps the last good checkpoint.

The pieces live beside this loop: options (:mod:`~mlxrnn.lm.options`), data
(:mod:`~mlxrnn.lm.run_data`), evaluation (:mod:`~mlxrnn.lm.evaluation`), the run directory
(:mod:`mlxrnn.io.run_directory`), signals (:mod:`mlxrnn.training.signals`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError, DataError, Interrupted, TrainingDiverged, WriteError
from mlxrnn.io.checkpoint import check_weights, load_checkpoint, save_run_checkpoint
from mlxrnn.io.run_directory import OPTIONS_FILE, RunDirectory
from mlxrnn.lm.carried_state import carried_state_tensors, split_carried_state
from mlxrnn.lm.evaluation import evaluate_windows, perplexity, unknown_rate
from mlxrnn.lm.init_from import load_source, load_weights_of, source_architecture
from mlxrnn.lm.model import LanguageModel, language_model_config, language_model_from_meta
from mlxrnn.lm.options import TrainOptions, option_changes
from mlxrnn.lm.resume import (
    check_training_meta,
    damaged,
    restore_rng,
    restored_state,
    resume_corpus,
    saved_options,
    schedule_state,
)
from mlxrnn.lm.run_data import (
    build_vocabulary,
    encode_corpus,
    evaluation_batcher,
    load_corpus,
    load_split_files,
    make_batchers,
)
from mlxrnn.lm.run_state import Progress, RunState, RunSummary, schedule_log_line
from mlxrnn.nn.optim import make_optimizer
from mlxrnn.nn.schedules import make_schedule
from mlxrnn.training.distributed import DataParallel
from mlxrnn.training.signals import deferred_signals
from mlxrnn.training.trainer import Trainer

__all__ = [
    "DIVERGENCE_FACTOR", "Interrupted", "LanguageModelRun", "Progress", "RunState", "RunSummary",
    "TrainOptions", "TrainingDiverged", "train_language_model",
]

DIVERGENCE_FACTOR = 3.0


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
        metrics: Callable[[dict], None] | None = None,
        init_from: str | Path | None = None,
        given: Collection[str] | None = None,
    ):
        """``given``: the settings of ``options`` the caller set (None: those not at their default);
        ``resume`` applies given resumable ones and refuses other changes (:meth:`TrainOptions.
        resumed_with`); ``init_from`` starts from a run's weights (:mod:`mlxrnn.lm.init_from`)."""
        self.dist = distributed or DataParallel()  # data-parallel: rank 0 alone prints and writes
        self.directory = RunDirectory(run_dir)
        self.run_dir = self.directory.path
        self.progress = progress if progress and self.dist.is_main else (lambda p: None)
        self.log = log if log and self.dist.is_main else (lambda message: None)
        self.on_metrics = metrics if metrics and self.dist.is_main else None
        self.how_started: dict[str, Any] = {}  #: how this session began, for the "start" record
        if resume and init_from is not None:
            raise ConfigError("`resume` continues a run and `init_from` starts a new one; pass one of them")
        try:
            if resume:
                if self.dist.is_main:
                    self.directory.check_resumable()  # and holds the directory's lock
                self._restore(options, given)
            else:
                replaced = self.directory.claim(force) if self.dist.is_main else ()
                self._start(options.validate(), replaced, init_from, given)
        except BaseException:
            self.close(failed=True)
            raise

    def close(self, failed: bool = False) -> None:
        """Let other processes use the run directory; with ``failed``, first drop a forced
        replacement that has no checkpoint yet (the old run then stays as it was)."""
        if failed:
            self.directory.abandon()
        self.directory.release()

    def _build(self, options: TrainOptions, text: str, vocab, tokenizer) -> None:
        self.options = options
        config = language_model_config(len(vocab), **options.model_settings())
        from mlxrnn.models.sequence_model import SequenceModel

        self.lm = LanguageModel(SequenceModel(config, backend=options.backend), vocab, tokenizer)
        self.ids = encode_corpus(vocab, tokenizer, text)  # compact: 1-2 bytes a token
        valid = self.split_files.get("valid")
        val_ids = encode_corpus(vocab, tokenizer, valid[0]) if valid else None
        self.train_batches, self.val_batches = make_batchers(options, self.ids, self.dist, val_ids=val_ids)
        extra = {"weight_decay": options.weight_decay} if options.weight_decay else {}
        self.optimizer = make_optimizer(options.optimizer, options.lr, **extra)
        self.schedule = make_schedule(
            options.schedule, options.lr, decay=options.lr_decay, patience=options.decay_patience,
            min_lr=options.min_lr, at_floor=options.at_min_lr, warmup=options.warmup,
        )
        self.trainer = Trainer(
            self.lm.model,
            self.optimizer,
            clip_norm=options.clip,
            rng=self.dist.dropout_rng(np.random.default_rng(options.seed + 12345)),
            grad_transform=self.dist.average_step if self.dist.size > 1 else None,
            compile=bool(options.compile),
        )

    def _start(self, options: TrainOptions, replaced: tuple[str, ...], init_from=None, given=None) -> None:
        if options.corpus is not None:  # saved absolute, so a resume works from any directory
            options = dataclasses.replace(options, corpus=os.path.abspath(options.corpus))
        source = None
        if init_from is not None:  # the source's architecture, vocabulary and weights
            source, source_step = load_source(init_from, self.run_dir)
            options = options.initialized_from(source_architecture(source), given).validate()
        text, self.corpus_sha = load_corpus(options)
        self.split_files = load_split_files(options)
        valid = self.split_files.get("valid")
        tokenizer, vocab = build_vocabulary(options, text, valid[0] if valid else None,
                                            base=source.vocab if source else None)[:2]  # tokens freed
        self._build(options, text, vocab, tokenizer)
        if source is not None:
            added = load_weights_of(source, self.lm)
            self.how_started["init_from"] = {"run": str(init_from), "step": source_step, "new_tokens": added}
            self.log(
                f"starting from the weights of {init_from}" + (f" (step {source_step})" if source_step else "")
                + f"; vocabulary: its {len(source.vocab)} tokens + {added} new from this corpus (fresh rows)"
            )
        self.state = RunState()
        if self.dist.is_main:  # the corpus and the model are usable: only now does the new run begin
            self.directory.start(replaced)  # beside the old run, if it replaces one (see RunDirectory)
            self.directory.write_json(
                OPTIONS_FILE, {"options": asdict(options), "vocab_size": len(vocab), **self.how_started}
            )

    def _restore(self, new_options: TrainOptions, given: Collection[str] | None) -> None:
        checkpoint = load_checkpoint(self.run_dir, tag="last")
        meta = checkpoint.meta
        saved = check_training_meta(meta, self.run_dir)  # every key and type, before anything is used
        world = saved.get("world_size", 1)
        if world != self.dist.size:
            raise ConfigError(
                f"{self.run_dir} was trained by {world} process(es), this is {self.dist.size}; "
                f"resume it with as many (mlx.launch -n {world} ... --distributed)"
            )
        # Given resumable settings apply from the next step; changing any other is refused. CORPUS
        # may move: a given path is accepted when its text is the one the run started on.
        started_with = saved_options(saved, self.run_dir)
        options = started_with.resumed_with(new_options, given).validate()
        changes = option_changes(started_with, options)
        moved = options.corpus if "corpus" in changes else None
        options, text, self.corpus_sha = resume_corpus(options, moved, saved["corpus_sha256"])
        self.split_files = load_split_files(options)
        for name, (_, sha) in self.split_files.items():
            if sha != saved.get("split_files_sha256", {}).get(name):
                raise DataError(
                    f"the `{name}` file {getattr(options, name)} changed since this run started; "
                    "resume with the original file or start a new run"
                )
        fresh = language_model_from_meta(meta, backend=options.backend)
        try:
            self._build(options, text, fresh.vocab, fresh.tokenizer)
        except ConfigError as error:  # the saved options do not fit the saved model
            raise damaged(self.run_dir, f"its options do not build its model ({error})") from None
        model = self.lm.model
        check_weights(checkpoint.weights, model.parameter_shapes())
        model.load_parameters(checkpoint.weights)
        xp = self.lm.xp
        optimizer_tensors, carry = split_carried_state(xp, checkpoint.optimizer_tensors)
        self.optimizer.load_state_dict(xp, saved["optimizer"], optimizer_tensors, shapes=model.parameter_shapes())
        schedule = schedule_state(saved, self.run_dir)
        if "schedule" in changes:  # the new schedule takes over at the current rate, keeping the best loss
            schedule = {**schedule, "name": options.schedule, "base_lr": self.optimizer.lr}
        self.schedule.load_state_dict(schedule)
        if "lr" in changes:  # a new rate replaces the (decayed) current one and the schedule's base
            self.optimizer.lr = self.schedule.base_lr = options.lr
        restore_rng(self.trainer.rng, saved["rng"], self.run_dir)
        rnn, rows = model.rnn, options.batch_size * self.dist.size
        self.state = restored_state(saved["state"], carry, len(self.train_batches), rnn.state_size,
                                    (rnn.num_layers * rnn.num_directions, rows, rnn.hidden_size), self.run_dir)
        self.state.carry = self.dist.shard_state(carry)  # the checkpoint holds every process's rows
        if self.dist.is_main:
            self.directory.trim_metrics(self.state.step)  # the steps after the checkpoint are done again
        self.how_started.update(resumed=True, changed=changes)
        applied = ", ".join(f"`{name}` {old!r} → {new!r}" for name, (old, new) in changes.items())
        self.log(
            f"resuming {self.run_dir} at step {self.state.step} (epoch {self.state.epoch})"
            + (f" with {applied}" if applied else "")
        )

    # --- persistence -------------------------------------------------------------------------
    def _metrics(self, record: dict) -> None:
        if self.dist.is_main:
            self.directory.append_metrics(record)
            if self.on_metrics is not None:
                self.on_metrics(dict(record))  # a copy: the callback may keep or change it

    def save(self, tags: tuple[str, ...] = ("last",)) -> Path:
        xp = self.lm.xp
        carry = self.dist.gather_state(self.state.carry)  # a collective: every process calls save()
        if not self.dist.is_main:
            return self.run_dir
        scalars, tensors = self.optimizer.state_dict(xp)
        tensors.update(carried_state_tensors(xp, carry))
        meta = self.lm.checkpoint_meta()
        meta["training"] = {
            "options": asdict(self.options),
            "optimizer": scalars,
            "schedule": self.schedule.state_dict(),
            "rng": self.trainer.rng.bit_generator.state,
            "state": self.state.to_dict(),
            "corpus_sha256": self.corpus_sha,
            "split_files_sha256": {name: sha for name, (_, sha) in self.split_files.items()},
            "world_size": self.dist.size,
        }
        meta["metrics"] = {"best_val_loss": self.state.best_val, "last_val_loss": self.state.last_val}
        target = save_run_checkpoint(
            self.directory.writing,
            self.state.step,
            self.lm.model.numpy_parameters(),
            meta,
            optimizer_tensors=tensors,
            tags=tags,
        )
        self.directory.commit()  # a forced run takes the old one's place at its first checkpoint
        return self.run_dir / target.parent.name / target.name

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self, scheduled: bool) -> tuple[float, bool]:
        """Validate, record, save; with ``scheduled``, also step the schedule and early stopping.
        Returns (validation loss, whether to stop early)."""
        val_loss = evaluate_windows(self.lm, self.val_batches, self.dist).loss
        state = self.state
        improved = state.best_val is None or val_loss < state.best_val
        state.last_val = val_loss
        if improved:
            state.best_val = val_loss
        stop = False
        if scheduled:
            stalled = self.schedule.after_evaluation(self.optimizer, val_loss)
            line = schedule_log_line(self.schedule, self.optimizer.lr, self.options)
            if line:
                self.log(line)
            patience = self.options.patience
            stop = stalled and patience is not None and self.schedule.bad_evals >= patience
            stop = stop or getattr(self.schedule, "exhausted", False)
        record = {
            "event": "eval",
            "step": state.step,
            "val_loss": val_loss,
            "val_perplexity": perplexity(val_loss),
            "best": improved,
            "lr": self.optimizer.lr,
            "elapsed": state.elapsed,  # training seconds so far (evaluations not counted), as in train records
        }
        if self.options.level == "char":
            record["val_bpc"] = val_loss / math.log(2)
        self._metrics(record)
        self.save(("last", "best") if improved else ("last",))
        return val_loss, stop

    def _stop_reason(self) -> str:
        if getattr(self.schedule, "exhausted", False):
            return f"learning rate at its floor `min_lr` ({self.optimizer.lr:.3g}) and validation stalled"
        return f"early stopping: no improvement in {self.options.patience} evaluations"

    def evaluate_test(self) -> dict | None:
        """The `test` file's loss under the best checkpoint (read back from the run directory)."""
        test = self.split_files.get("test")
        if test is None:
            return None
        self.dist.barrier()  # rank 0 has written the best checkpoint
        best, last = load_checkpoint(self.run_dir, tag="best"), self.lm.model.parameters()
        tokens = self.lm.tokenizer.tokenize(test[0])
        ids = self.lm.vocab.encode(tokens)
        what = f"the `test` file has {len(ids)} tokens"
        batches = self.dist.shard_batcher(
            evaluation_batcher(ids, self.options, self.dist, what, "use a longer `test` file", name="test file")
        )
        self.lm.model.load_parameters(best.weights)
        result = evaluate_windows(self.lm, batches, self.dist)
        self.lm.model.load_parameters(last)  # the run's model stays the last one, as without a test file
        record = {
            "event": "test",
            "step": self.state.step,
            "checkpoint_step": best.meta.get("training", {}).get("state", {}).get("step"),
            "test_loss": result.loss,
            "test_perplexity": perplexity(result.loss),
            "num_tokens": len(ids),
            "oov_rate": unknown_rate(tokens, self.lm.vocab)[1],
            "tokenizer": self.lm.tokenizer.kind,
        }
        if self.options.level == "char":
            record["test_bpc"] = result.loss / math.log(2)
        self._metrics(record)
        return record

    # --- the loop ----------------------------------------------------------------------------
    def train(self) -> RunSummary:
        """Train until a stopping criterion; a forced run that fails before its first checkpoint
        leaves the run it was to replace as it was. The run directory's lock is released when
        it returns or fails, so the same process may resume the run next."""
        try:
            summary = self._train()
            self.close()
            return summary
        except BaseException as error:
            replacing, sibling = self.directory.replacing, str(self.directory.writing)
            self.close(failed=True)
            if replacing and isinstance(error, (WriteError, CheckpointError, DataError)):
                # the sibling the new run was built in is gone: name the directory the user knows
                message = str(error).replace(sibling, str(self.run_dir))
                raise type(error)(f"{message}; the run it was to replace in {self.run_dir} is unchanged") from None
            raise

    def _train(self) -> RunSummary:
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
        started, start_step, tokens_run = time.perf_counter(), state.step, 0
        elapsed_before = state.elapsed
        reason = "finished"
        self._metrics(
            {
                "event": "start",
                "step": state.step,
                "options": asdict(options),
                "steps_per_epoch": per_epoch,
                "backend": self.lm.xp.name,
                "compiled": self.trainer.compiled,
                "processes": self.dist.size,
                **self.how_started,  # resumed (and what changed) or init_from
            }
        )
        with deferred_signals() as received:
            # On MLX the step is queued, not waited for: its loss and gradient norm are read (the
            # divergence check, the log) only after the next step is queued, so the device never
            # idles while the host reports and prepares. Everything that saves or evaluates reads
            # the pending step first, so no diverged weights are ever written.
            lagged = self.trainer.compiled
            pending: list = []  # at most one (result, now, speed, lr) whose numbers are not yet read

            def settle() -> None:
                if pending:
                    result, now, speed, lr = pending.pop()
                    self._check_divergence(result.loss, result.grad_norm, step=state.step)
                    self._report_step(result, total_steps, budget, now, speed, start_step, lr)

            while True:
                if total_steps is not None and state.step >= total_steps:
                    reason = "step limit reached" if stop["steps"] == total_steps else "epoch limit reached"
                    break
                run_time = time.perf_counter() - started
                run_time, signals = self.dist.agree(run_time, received)  # data-parallel: all decide alike
                if budget is not None and run_time >= budget:
                    reason = "time budget reached"
                    break
                if signals:
                    settle()
                    self._finish_interrupted(signals[0], started, elapsed_before)
                fraction = state.step / total_steps if total_steps else run_time / budget
                self.schedule.before_step(self.optimizer, fraction)
                step_lr = self.optimizer.lr  # the next step's schedule may change it before this one is reported
                inputs, targets = self.train_batches.window(state.window)
                result = self.trainer.step({"inputs": inputs, "targets": targets, "initial_state": state.carry})
                settle()  # the previous step's numbers, while this one runs
                state.carry = result.aux["final_state"]
                state.step += 1
                tokens = targets.size * self.dist.size  # every process's rows of the window
                state.tokens += tokens
                tokens_run += tokens
                state.window += 1
                if state.window >= per_epoch:  # a new epoch starts from a zero state
                    state.window, state.epoch, state.carry = 0, state.epoch + 1, None
                now = time.perf_counter() - started
                state.elapsed = elapsed_before + now
                speed = tokens_run / max(now, 1e-9)
                pending.append((result, now, speed, step_lr))
                if not lagged or state.step % options.eval_every == 0:
                    settle()
                if state.step % options.eval_every == 0:
                    val_loss, early = self.evaluate(scheduled=True)
                    self.progress(
                        Progress(
                            state.step,
                            total_steps,
                            state.epoch,
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
                        reason = self._stop_reason()
                        break
            settle()
            if state.step % options.eval_every != 0 or state.step == start_step:
                self.evaluate(scheduled=False)  # saves; a signal meanwhile is acted on just below
            _, signals = self.dist.agree(time.perf_counter() - started, received)
            if signals:
                self._finish_interrupted(signals[0], started, elapsed_before)
            test = self.evaluate_test()
        elapsed = time.perf_counter() - started
        summary = RunSummary(
            str(self.run_dir),
            state.step,
            state.epoch + state.window / per_epoch,
            state.best_val,
            state.last_val,
            state.elapsed,
            tokens_run / max(elapsed, 1e-9),
            reason,
            options.level,
            test_loss=None if test is None else test["test_loss"],
            tokenizer=self.lm.tokenizer.kind,
        )
        self._metrics({"event": "end", **summary.to_dict()})
        return summary

    def _report_step(self, result, total_steps, budget, now, speed, start_step, lr) -> None:
        state = self.state
        done = state.step - start_step
        eta = None
        if total_steps is not None:
            eta = (total_steps - state.step) * now / max(done, 1)
        if budget is not None:
            eta = min(eta, budget - now) if eta is not None else budget - now
        state.clipped_since_record += bool(result.clipped)
        state.steps_since_record += 1
        if state.step % self.options.log_every == 0:
            self._metrics(
                {
                    "event": "train",
                    "step": state.step,
                    "epoch": state.epoch,
                    "loss": result.loss,
                    "grad_norm": result.grad_norm,
                    "clipped": result.clipped,
                    # the fraction of the steps since the previous record that clipped
                    "clip_rate": state.clipped_since_record / state.steps_since_record,
                    "lr": lr,
                    "tokens_per_second": speed,
                    "elapsed": state.elapsed,
                }
            )
            state.clipped_since_record = state.steps_since_record = 0
        self.progress(Progress(state.step, total_steps, state.epoch, result.loss, speed, now, eta, lr))

    def _check_divergence(self, loss: float, grad_norm: float, step: int) -> None:
        """Stop the run if step ``step`` (1-based: the step that produced ``loss``) diverged."""
        state = self.state
        if state.initial_loss is None and math.isfinite(loss):
            state.initial_loss = loss
        limit = DIVERGENCE_FACTOR * (state.initial_loss or math.inf)
        if not math.isfinite(loss) or loss > limit or not math.isfinite(grad_norm):
            if not math.isfinite(loss):
                what = "the loss became " + str(loss)
            elif loss > limit:
                what = f"the loss rose to {loss:.3f} (over 3× the first loss)"
            else:  # the trainer undid the update, so the weights in memory are still the last good ones
                what = f"the gradient norm became {grad_norm}"
            self._metrics({"event": "diverged", "step": step, "loss": loss if math.isfinite(loss) else None})
            if self.directory.replacing:
                kept = f"no checkpoint had been saved yet, so the run it was to replace in {self.run_dir} is unchanged"
            elif (self.run_dir / "last.json").exists():
                kept = f"the last good checkpoint is kept in {self.run_dir}"
            else:
                kept = "no checkpoint had been saved yet"
            clip = f"a smaller `clip` (now {self.options.clip:g})" if self.options.clip else "`clip` 5"
            raise TrainingDiverged(
                f"training stopped at step {step}: {what}; {kept}; "
                f"try a lower `lr` (now {self.optimizer.lr:g}) or {clip}"
            )

    def _finish_interrupted(self, signum: int, started: float, elapsed_before: float) -> None:
        self.state.elapsed = elapsed_before + time.perf_counter() - started
        path = self.save(("last",))
        name = signal.Signals(signum).name
        self._metrics({"event": "interrupted", "step": self.state.step, "signal": name})
        self.dist.barrier()  # no process exits (mlx.launch then stops the rest) before rank 0 has saved
        raise Interrupted(
            f"{name} received: saved step {self.state.step} to {path}; "
            f"continue with: mlxrnn train --resume --out {self.run_dir}",
            signum,
        )


def train_language_model(
    options: TrainOptions | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[Progress], None] | None = None,
    metrics: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
    distributed: DataParallel | None = None,
    init_from: str | Path | None = None,
    given: Collection[str] | None = None,
    **settings: Any,
) -> RunSummary:
    """Train (or with ``resume=True`` continue) a language model in ``run_dir``: ``mlxrnn train``.

    Args:
        options: a :class:`TrainOptions`; or give its fields as keywords (they override
            ``options`` when both are given): ``train_language_model(corpus="my.txt",
            run_dir="runs/mine", level="word", hidden=256, steps=2000)``. The field names are the
            CLI's flags with ``_`` for ``-`` (``--seq-len`` is ``seq_len``).
        run_dir: the run directory (``--out``); resume, force: as ``--resume`` and ``--force``.
        progress: called with a :class:`Progress` after every step (``event="train"``: step,
            total_steps, epoch, loss, tokens_per_second, elapsed, eta_seconds, lr) and after every
            scheduled evaluation (``event="eval"``, with ``val_loss``).
        metrics: called with every record the run appends to ``metrics.jsonl``, as a dict with the
            same keys: "start"; "train" every ``log_every`` steps (step, epoch, loss, grad_norm,
            clipped, clip_rate, lr, tokens_per_second, elapsed); "eval" (step, val_loss,
            val_perplexity, best, lr, and val_bpc for character models); "end" (the summary's
            keys); "diverged"; "interrupted".
        log: called with a line of text for notable events (resuming, learning-rate decays).
        distributed: a :class:`~mlxrnn.training.distributed.DataParallel` for multi-process runs.
        init_from: start a new run from this run's best weights (``--init-from``).
        given: the settings the caller set on purpose (a resumed run applies or refuses exactly
            these); None: the ones not at their default.
    Returns:
        the :class:`RunSummary` (``to_dict()`` is ``mlxrnn train --json``); the trained model is
        ``mlxrnn.load(summary.run_dir)``.
    Raises:
        ConfigError, DataError: bad settings or corpus (nothing is written);
        TrainingDiverged: the loss became NaN or exploded (the last good checkpoint is kept);
        Interrupted: SIGINT/SIGTERM (Ctrl-C) stopped the run after saving its last checkpoint.
    """
    if run_dir is None:
        raise ConfigError("`run_dir` is required: the directory the run writes its checkpoints and metrics to")
    run = LanguageModelRun(TrainOptions.with_settings(options, settings), run_dir, resume=resume, force=force,
                           progress=progress, log=log, distributed=distributed, metrics=metrics,
                           init_from=init_from, given=given)
    try:
        return run.train()
    finally:
        run.close()
