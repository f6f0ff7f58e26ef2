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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError, DataError, Interrupted, TrainingDiverged, WriteError
from mlxrnn.io.checkpoint import check_weights, load_checkpoint, save_run_checkpoint
from mlxrnn.io.run_directory import OPTIONS_FILE, RunDirectory
from mlxrnn.lm.carried_state import carried_state_tensors, split_carried_state
from mlxrnn.lm.evaluation import evaluate_windows, perplexity
from mlxrnn.lm.model import LanguageModel, language_model_config, language_model_from_meta
from mlxrnn.lm.options import TrainOptions
from mlxrnn.lm.resume import (
    check_training_meta,
    damaged,
    restore_rng,
    restored_state,
    resume_corpus,
    saved_options,
    schedule_state,
)
from mlxrnn.lm.run_data import build_vocabulary, encode_corpus, load_corpus, make_batchers
from mlxrnn.lm.run_state import Progress, RunState, RunSummary
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
    ):
        self.dist = distributed or DataParallel()  # data-parallel: rank 0 alone prints and writes
        self.directory = RunDirectory(run_dir)
        self.run_dir = self.directory.path
        self.progress = progress if progress and self.dist.is_main else (lambda p: None)
        self.log = log if log and self.dist.is_main else (lambda message: None)
        try:
            if resume:
                if self.dist.is_main:
                    self.directory.check_resumable()  # and holds the directory's lock
                self._restore(options)
            else:
                replaced = self.directory.claim(force) if self.dist.is_main else ()
                self._start(options.validate(), replaced)
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
        self.train_batches, self.val_batches = make_batchers(options, self.ids, self.dist)
        extra = {"weight_decay": options.weight_decay} if options.weight_decay else {}
        self.optimizer = make_optimizer(options.optimizer, options.lr, **extra)
        self.schedule = make_schedule(options.schedule, options.lr, decay=options.lr_decay)
        self.trainer = Trainer(
            self.lm.model,
            self.optimizer,
            clip_norm=options.clip,
            rng=self.dist.dropout_rng(np.random.default_rng(options.seed + 12345)),
            grad_transform=self.dist.average_step if self.dist.size > 1 else None,
        )

    def _start(self, options: TrainOptions, replaced: tuple[str, ...]) -> None:
        if options.corpus is not None:  # saved absolute, so a resume works from any directory
            options = dataclasses.replace(options, corpus=os.path.abspath(options.corpus))
        text, self.corpus_sha = load_corpus(options)
        tokenizer, vocab = build_vocabulary(options, text)[:2]  # its token list is freed before encoding
        self._build(options, text, vocab, tokenizer)
        self.state = RunState()
        if self.dist.is_main:  # the corpus and the model are usable: only now does the new run begin
            self.directory.start(replaced)  # beside the old run, if it replaces one (see RunDirectory)
            self.directory.write_json(OPTIONS_FILE, {"options": asdict(options), "vocab_size": len(vocab)})

    def _restore(self, new_options: TrainOptions) -> None:
        checkpoint = load_checkpoint(self.run_dir, tag="last")
        meta = checkpoint.meta
        saved = check_training_meta(meta, self.run_dir)  # every key and type, before anything is used
        world = saved.get("world_size", 1)
        if world != self.dist.size:
            raise ConfigError(
                f"{self.run_dir} was trained by {world} process(es), this is {self.dist.size}; "
                f"resume it with as many (mlx.launch -n {world} ... --distributed)"
            )
        # Only the stopping criteria (and the backend) may change when resuming; CORPUS may move.
        options = saved_options(saved, self.run_dir).resumed_with(new_options).validate()
        options, text, self.corpus_sha = resume_corpus(options, new_options.corpus, saved["corpus_sha256"])
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
        self.schedule.load_state_dict(schedule_state(saved, self.run_dir))
        restore_rng(self.trainer.rng, saved["rng"], self.run_dir)
        rnn, rows = model.rnn, options.batch_size * self.dist.size
        self.state = restored_state(saved["state"], carry, len(self.train_batches), rnn.state_size,
                                    (rnn.num_layers * rnn.num_directions, rows, rnn.hidden_size), self.run_dir)
        self.state.carry = self.dist.shard_state(carry)  # the checkpoint holds every process's rows
        if self.dist.is_main:
            self.directory.trim_metrics(self.state.step)  # the steps after the checkpoint are done again
        self.log(f"resuming {self.run_dir} at step {self.state.step} (epoch {self.state.epoch})")

    # --- persistence -------------------------------------------------------------------------
    def _metrics(self, record: dict) -> None:
        if self.dist.is_main:
            self.directory.append_metrics(record)

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
            if stalled and self.options.schedule == "plateau":
                self.log(f"validation loss did not improve: learning rate → {self.optimizer.lr:.3g}")
            patience = self.options.patience
            stop = stalled and patience is not None and self.schedule.bad_evals >= patience
        record = {
            "event": "eval",
            "step": state.step,
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
        """Train until a stopping criterion; a forced run that fails before its first checkpoint
        leaves the run it was to replace as it was."""
        try:
            return self._train()
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
                "processes": self.dist.size,
            }
        )
        with deferred_signals() as received:
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
                    self._finish_interrupted(signals[0], started, elapsed_before)
                fraction = state.step / total_steps if total_steps else run_time / budget
                self.schedule.before_step(self.optimizer, fraction)
                inputs, targets = self.train_batches.window(state.window)
                result = self.trainer.step({"inputs": inputs, "targets": targets, "initial_state": state.carry})
                self._check_divergence(result.loss, result.grad_norm)
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
                self._report_step(result, total_steps, budget, now, speed, start_step)
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
                        reason = f"early stopping: no improvement in {options.patience} evaluations"
                        break
            if state.step % options.eval_every != 0 or state.step == start_step:
                self.evaluate(scheduled=False)  # saves; a signal meanwhile is acted on just below
            _, signals = self.dist.agree(time.perf_counter() - started, received)
            if signals:
                self._finish_interrupted(signals[0], started, elapsed_before)
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
        )
        self._metrics({"event": "end", **summary.to_dict()})
        return summary

    def _report_step(self, result, total_steps, budget, now, speed, start_step) -> None:
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
                    "lr": self.optimizer.lr,
                    "tokens_per_second": speed,
                    "elapsed": state.elapsed,
                }
            )
            state.clipped_since_record = state.steps_since_record = 0
        self.progress(Progress(state.step, total_steps, state.epoch, result.loss, speed, now, eta, self.optimizer.lr))

    def _check_divergence(self, loss: float, grad_norm: float = 0.0) -> None:
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
            self._metrics({"event": "diverged", "step": state.step + 1, "loss": loss if math.isfinite(loss) else None})
            if self.directory.replacing:
                kept = f"no checkpoint had been saved yet, so the run it was to replace in {self.run_dir} is unchanged"
            elif (self.run_dir / "last.json").exists():
                kept = f"the last good checkpoint is kept in {self.run_dir}"
            else:
                kept = "no checkpoint had been saved yet"
            clip = f"a smaller `clip` (now {self.options.clip:g})" if self.options.clip else "`clip` 5"
            raise TrainingDiverged(
                f"training stopped at step {state.step + 1}: {what}; {kept}; "
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


def train_language_model(options: TrainOptions, run_dir: str | Path, **kwargs: Any) -> RunSummary:
    """Train (or with ``resume=True`` continue) a language model in ``run_dir``."""
    run = LanguageModelRun(options, run_dir, **kwargs)
    try:
        return run.train()
    finally:
        run.close()
