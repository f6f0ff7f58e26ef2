"""Training a language model end to end: corpus → batches → Trainer → evaluations → checkpoints.

The loop is char-rnn's truncated BPTT: the corpus is cut into B parallel streams read in
windows of T tokens, and the hidden state at the end of one window is the initial state of the
next (its gradient is not carried back). It stops after a number of epochs or steps, or a
wall-clock budget; evaluates on the validation split every N steps or at each epoch's end; sets
the learning rate by a schedule (:mod:`mlxrnn.nn.schedules`); stops early when validation
stalls; logs JSON lines to ``RUN_DIR/metrics.jsonl``; keeps ``best`` and ``last`` checkpoints.

Resuming is exact: a checkpoint holds the weights, the optimizer's moments, the schedule's
memory, the dropout RNG's state and the :class:`~mlxrnn.run.state.RunState` (position in the
epoch, carried hidden state, counters), so on NumPy a resumed run computes bit-for-bit the
losses of an uninterrupted one. Evaluations never touch the training state (an extra evaluation
at the end of a run therefore does not change what follows).

SIGINT, SIGTERM and SIGHUP finish the current step, save ``last``, and raise :class:`Interrupted`.
A NaN/Inf loss, or a loss above 3× the first one (char-rnn's rule), raises
:class:`TrainingDiverged` and keeps the last good checkpoint.

The pieces live beside this loop: options (:mod:`~mlxrnn.run.options`), data
(:mod:`~mlxrnn.run.data`), evaluation (:mod:`~mlxrnn.lm.evaluation`), the run directory
(:mod:`mlxrnn.io.run_directory`), signals (:mod:`mlxrnn.training.signals`).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlxrnn.errors import CheckpointError, ConfigError, DataError, Interrupted, TrainingDiverged, WriteError
from mlxrnn.io.run_directory import TENSORBOARD_SUBDIR, RunDirectory
from mlxrnn.run.options import TrainOptions
from mlxrnn.run.plan import plan_warnings, run_plan
from mlxrnn.run.records import RunRecords
from mlxrnn.run.setup import RunSetup
from mlxrnn.run.state import Progress, RunState, RunSummary
from mlxrnn.run.tensorboard import TensorBoardLog, summary_writer_class
from mlxrnn.training.distributed import DataParallel
from mlxrnn.training.signals import deferred_signals

__all__ = [
    "DIVERGENCE_FACTOR", "Interrupted", "LanguageModelRun", "Progress", "RunState", "RunSummary",
    "TrainOptions", "TrainingDiverged", "train_language_model",
]

DIVERGENCE_FACTOR = 3.0
#: steps of a session before it estimates the time left (the first ones are slow: compilation, caches)
ETA_AFTER = 3


class LanguageModelRun(RunSetup, RunRecords):
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
        resumed_with`); ``init_from`` starts from a run's weights (:mod:`mlxrnn.run.init_from`)."""
        self.dist = distributed or DataParallel()  # data-parallel: rank 0 alone prints and writes
        self.directory = RunDirectory(run_dir)
        self.run_dir = self.directory.path
        self.progress = progress if progress and self.dist.is_main else (lambda p: None)
        self.log = log if log and self.dist.is_main else (lambda message: None)
        self.on_metrics = metrics if metrics and self.dist.is_main else None
        self.how_started: dict[str, Any] = {}  #: how this session began, for the "start" record
        self.tensorboard: TensorBoardLog | None = None  #: event files, when `tensorboard` asks for them
        if resume and init_from is not None:
            raise ConfigError("`resume` continues a run and `init_from` starts a new one; pass one of them")
        if options.tensorboard:
            summary_writer_class()  # missing: said before anything is written
        try:
            if resume:
                if self.dist.is_main:
                    self.directory.check_resumable()  # and holds the directory's lock
                self._restore(options, given)
            else:
                replaced = self.directory.claim(force) if self.dist.is_main else ()
                self._start(options.validate(), replaced, init_from, given)
            if self.options.tensorboard and self.dist.is_main:
                self.tensorboard = TensorBoardLog(self.directory.writing / TENSORBOARD_SUBDIR, self.state.step)
        except BaseException:
            self.close(failed=True)
            raise

    def close(self, failed: bool = False) -> None:
        """Let other processes use the run directory; with ``failed``, first drop a forced
        replacement that has no checkpoint yet (the old run then stays as it was)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if failed:
            self.directory.abandon()
        self.directory.release()

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
        every = options.eval_interval(per_epoch)  # "epoch": at each epoch's end (state.window back at 0)
        total_steps = None
        if stop["steps"] is not None:
            total_steps = stop["steps"]
        if stop["epochs"] is not None:
            by_epochs = int(math.ceil(stop["epochs"] * per_epoch))
            total_steps = by_epochs if total_steps is None else min(total_steps, by_epochs)
        budget = stop["minutes"] * 60.0 if stop["minutes"] is not None else None
        if total_steps is not None and state.step >= total_steps:  # a finished run resumed as it was
            raise ConfigError(self._nothing_to_train(stop, total_steps))
        plan = run_plan(options, self.lm, per_epoch, total_steps, state.step, self.trainer.compiled, self.dist.size)
        warnings = plan_warnings(options, plan, options.batch_size * self.dist.size)
        for line in (plan["line"], *warnings):
            self.log(line)
        started, start_step, tokens_run = time.perf_counter(), state.step, 0
        elapsed_before = state.elapsed
        self._eta_origin = None  # (the time of) the step the ETA is measured from, once a few are done
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
                "plan": plan,
                "warnings": warnings,
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

            was_stopped = state.stopped is not None  # a stopped run, resumed without what continues it
            while True:
                if state.stopped is not None:
                    reason = self._stop_reason(resumed=was_stopped)
                    break
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
                if not lagged or state.step % every == 0:
                    settle()
                if state.step % every == 0:
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
                            level=self.lm.level,
                        )
                    )
                    if early:
                        continue  # the decision is in state.stopped (and the checkpoint just saved)
            settle()
            if not was_stopped and (state.step % every != 0 or state.step == start_step):
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
        # The first steps are slow (compilation, caches): the ETA is measured from step ETA_AFTER
        # of the session on, so it does not promise minutes for a run of seconds.
        if done == ETA_AFTER:
            self._eta_origin = now
        if total_steps is not None and done > ETA_AFTER and self._eta_origin is not None:
            eta = (total_steps - state.step) * (now - self._eta_origin) / (done - ETA_AFTER)
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
        self.progress(Progress(state.step, total_steps, state.epoch, result.loss, speed, now, eta, lr,
                               level=self.lm.level))

    def _nothing_to_train(self, stop: dict, total_steps: int) -> str:
        """Why a resumed run has no step left, and which setting extends it."""
        if stop["steps"] == total_steps:
            limit = f"its step limit (`steps` {total_steps})"
        else:
            limit = f"its epoch limit (`epochs` {stop['epochs']:g}, {total_steps} steps)"
        return (f"nothing to train: {self.run_dir} already reached {limit} at step {self.state.step}; give a new "
                f"budget to go on, e.g. `steps` {2 * total_steps}, or `epochs`/`minutes`")

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
        replaced = self.run_dir if self.directory.replacing else None
        path = self.save(("last",), interrupted=True)
        name = signal.Signals(signum).name
        self._metrics({"event": "interrupted", "step": self.state.step, "signal": name})
        self.dist.barrier()  # no process exits (mlx.launch then stops the rest) before rank 0 has saved
        kept = ""
        if replaced is not None and self.run_dir != replaced:
            kept = (f" (the new run, kept beside the run in {replaced}, which `force` was to replace and which is "
                    "unchanged)")
        raise Interrupted(
            f"{name} received: saved step {self.state.step} to {path}{kept}; "
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
            CLI's flags with ``_`` for ``-`` (``--seq-len`` is ``seq_len``), and they resolve as
            the flags do (:meth:`TrainOptions.with_settings`): ``dropout=0.5`` acts at the
            embedding, between layers and before the output; ``tokenizer="whitespace"`` sets
            ``level`` word.
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
