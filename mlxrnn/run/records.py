"""What a run writes as it goes: metrics records, checkpoints, validation and test evaluations.

A mixin of :class:`~mlxrnn.run.loop.LanguageModelRun`. Evaluations never touch the training state
(weights are restored after a test evaluation), so an extra evaluation does not change what follows.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from mlxrnn.io.checkpoint import load_checkpoint, save_run_checkpoint
from mlxrnn.lm.evaluation import UNKNOWN_IN_TRAINING, evaluate_ids, evaluate_text, evaluate_windows, perplexity
from mlxrnn.run.carried_state import carried_state_tensors
from mlxrnn.run.data import count_unknown
from mlxrnn.run.state import schedule_log_line


class RunRecords:
    """Records, checkpoints and evaluations of a run (see the module docstring)."""

    # --- persistence -------------------------------------------------------------------------
    def _metrics(self, record: dict) -> None:
        if self.dist.is_main:
            self.directory.append_metrics(record)
            if self.tensorboard is not None:  # the same record as TensorBoard scalars (`tensorboard`)
                self.tensorboard.record(record)
            if self.on_metrics is not None:
                self.on_metrics(dict(record))  # a copy: the callback may keep or change it

    def save(self, tags: tuple[str, ...] = ("last",), interrupted: bool = False) -> Path:
        """Save a checkpoint of the run (weights, optimizer, schedule, RNG, run state) under ``tags``;
        returns its path. A forced run's first one swaps it in place of the old run, unless
        ``interrupted``: then it is kept beside the old run instead (:meth:`RunDirectory.set_aside`)."""
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
        meta[UNKNOWN_IN_TRAINING] = self.unknown_in_training  # eval and score tell whether <UNK> was learned
        target = save_run_checkpoint(
            self.directory.writing,
            self.state.step,
            self.lm.model.numpy_parameters(),
            meta,
            optimizer_tensors=tensors,
            tags=tags,
        )
        if interrupted and self.directory.replacing:  # Ctrl-C is no reason to delete the old run
            self.run_dir = self.directory.set_aside()
        self.directory.commit()  # a forced run takes the old one's place at its first checkpoint
        return self.run_dir / target.parent.name / target.name

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
            if stop:  # in the checkpoint saved below: a resumed run keeps the decision
                state.stopped = "min_lr" if getattr(self.schedule, "exhausted", False) else "patience"
        record = {
            "event": "eval",
            "step": state.step,
            "val_loss": val_loss,
            "val_perplexity": perplexity(val_loss),
            "best": improved,
            "lr": self.optimizer.lr,
            "elapsed": state.elapsed,  # training seconds so far (evaluations not counted), as in train records
        }
        # total nats over the validation text's characters (lm.evaluation): every tokenizer compares by it
        record["val_bpc"] = val_loss * self.val_tokens_per_char / math.log(2)
        self._metrics(record)
        self.save(("last", "best") if improved else ("last",))
        return val_loss, stop

    def _stop_reason(self, resumed: bool = False) -> str:
        """Why the run stopped (``resumed``: it had stopped before, and which setting continues it)."""
        if self.state.stopped == "min_lr":
            reason = f"learning rate at its floor `min_lr` ({self.optimizer.lr:.3g}) and validation stalled"
            again = "`at_min_lr` continue (or a lower `min_lr`)"
        else:
            reason = f"early stopping: no improvement in {self.options.patience} evaluations"
            again = "a larger `patience`"
        if resumed:
            reason += f" (the run stopped at step {self.state.step}; resume with {again} to train on)"
        return reason

    def evaluate_test(self) -> dict | None:
        """The `test` file's loss under the best checkpoint (read back from the run directory).

        Measured as ``mlxrnn eval RUN FILE`` measures it (one stream from the start token, the
        state carried through the whole file), so the two print the same number; the run's
        validation loss is read as parallel streams (``batch_size`` of them), which start from a
        zero state in several places and so differ slightly from an eval of the same file.
        """
        test = self.split_files.get("test")
        if test is None and self.prepared_test is None:
            return None
        self.dist.barrier()  # rank 0 has written the best checkpoint
        best, last = load_checkpoint(self.run_dir, tag="best"), self.lm.model.parameters()
        self.lm.model.load_parameters(best.weights)
        try:  # every process alike: the same number on each
            if test is not None:
                result = evaluate_text(self.lm, test[0])
                bits_per_char = result.bits_per_char
            else:  # a prepared corpus's test part: its ids, and its tokens per character
                ids, tokens_per_char = self.prepared_test
                result = evaluate_ids(self.lm, ids)
                result.num_unknown = count_unknown(ids, self.lm.vocab)
                bits_per_char = result.loss * tokens_per_char / math.log(2)  # as val_bpc is
        finally:
            self.lm.model.load_parameters(last)  # the run's model stays the last one, as without a test file
        record = {
            "event": "test",
            "step": self.state.step,
            "checkpoint_step": best.meta.get("training", {}).get("state", {}).get("step"),
            "test_loss": result.loss,
            "test_perplexity": perplexity(result.loss),
            "num_tokens": result.num_tokens,
            "oov_rate": result.oov_rate,
            "tokenizer": self.lm.tokenizer.kind,
            "test_bpc": bits_per_char,  # total nats over the text's characters, / ln 2
        }
        self._metrics(record)
        return record
