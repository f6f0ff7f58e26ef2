"""What a run writes as it goes: metrics records, checkpoints, validation and test evaluations.

A mixin of :class:`~mlxrnn.run.loop.LanguageModelRun`. Evaluations never touch the training state
(weights are restored after a test evaluation), so an extra evaluation does not change what follows.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from mlxrnn.io.checkpoint import load_checkpoint, save_run_checkpoint
from mlxrnn.lm.evaluation import evaluate_windows, perplexity, unknown_rate
from mlxrnn.run.carried_state import carried_state_tensors
from mlxrnn.run.data import (
    evaluation_batcher,
)
from mlxrnn.run.state import schedule_log_line


class RunRecords:
    """Records, checkpoints and evaluations of a run (see the module docstring)."""

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
        # total nats over the validation text's characters (lm.evaluation): every tokenizer compares by it
        record["val_bpc"] = val_loss * self.val_tokens_per_char / math.log(2)
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
        if test is None and self.prepared_test is None:
            return None
        self.dist.barrier()  # rank 0 has written the best checkpoint
        best, last = load_checkpoint(self.run_dir, tag="best"), self.lm.model.parameters()
        tokens = None
        if test is None:  # a prepared corpus's test part: its ids, and its tokens per character
            ids, tokens_per_char = self.prepared_test
        else:
            text = test[0]
            tokens = None if hasattr(self.lm.tokenizer, "encode_ids") else self.lm.tokenizer.tokenize(text)
            ids = self.lm.tokenizer.encode_ids(text) if tokens is None else self.lm.vocab.encode(tokens)
            tokens_per_char = len(ids) / max(len(text), 1)
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
            "oov_rate": 0.0 if tokens is None else unknown_rate(tokens, self.lm.vocab)[1],
            "tokenizer": self.lm.tokenizer.kind,
            # the evaluated tokens' share of the file's characters: total nats over characters
            "test_bpc": result.loss * tokens_per_char / math.log(2),
        }
        self._metrics(record)
        return record
