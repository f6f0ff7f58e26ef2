"""How a run begins: a new run (its vocabulary, model, optimizer and first records), one started
from another run's weights (``init_from``), or one resumed from its last checkpoint, exactly.

A mixin of :class:`~mlxrnn.run.loop.LanguageModelRun`, which holds the state these methods set:
``options``, ``lm``, ``ids`` and the batchers, ``trainer``, ``optimizer``, ``schedule``, ``state``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import asdict

import numpy as np

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.checkpoint import check_weights, load_checkpoint
from mlxrnn.io.run_directory import OPTIONS_FILE
from mlxrnn.lm.initialisation import initial_range
from mlxrnn.lm.model import LanguageModel, language_model_config, language_model_from_meta
from mlxrnn.nn.optim import make_optimizer
from mlxrnn.nn.schedules import make_schedule
from mlxrnn.run.carried_state import split_carried_state
from mlxrnn.run.data import (
    build_vocabulary,
    count_unknown,
    encode_corpus,
    load_corpus,
    load_split_files,
    make_batchers,
    prepared_ids,
    prepared_options,
    untrained_unknown_note,
)
from mlxrnn.run.init_from import load_source, load_weights_of, source_architecture
from mlxrnn.run.option_declarations import option_changes
from mlxrnn.run.options import TrainOptions, given_settings
from mlxrnn.run.resume import (
    check_training_meta,
    damaged,
    restore_rng,
    restored_state,
    resume_corpus,
    resume_split_files,
    saved_options,
    schedule_state,
    shown_value,
)
from mlxrnn.run.state import STOP_DECISIONS, RunState
from mlxrnn.text.bpe import BPETokenizer
from mlxrnn.text.corpus import split_by_fraction
from mlxrnn.text.prepared import PreparedCorpus
from mlxrnn.training.trainer import Trainer


class RunSetup:
    """Building, starting and restoring a run (see the module docstring)."""

    def _build(self, options: TrainOptions, text: str, vocab, tokenizer, embed_init_range: float | None) -> None:
        """The run's model, batches, optimizer, schedule and trainer; ``embed_init_range``: the
        embedding's initial values (:mod:`mlxrnn.lm.initialisation`; a resumed run loads its own)."""
        self.options = options
        config = language_model_config(len(vocab), **options.model_settings(), embed_init_range=embed_init_range)
        from mlxrnn.models.sequence_model import SequenceModel

        self.lm = LanguageModel(SequenceModel(config, backend=options.backend), vocab, tokenizer)
        self.prepared_test = None
        if isinstance(text, PreparedCorpus):  # memory maps: nothing is read until a window needs it
            parts = prepared_ids(text, vocab, tokenizer)
            self.ids, val_ids = parts["train"], parts["valid"]
            self.val_tokens_per_char = text.tokens_per_char("valid")
            if "test" in parts:
                self.prepared_test = (parts["test"], text.tokens_per_char("test"))
        else:
            self.ids = encode_corpus(vocab, tokenizer, text)  # compact: 1-2 bytes a token
            valid = self.split_files.get("valid")
            val_ids = encode_corpus(vocab, tokenizer, valid[0]) if valid else None
            # tokens per character of the validation text (a split: of the whole corpus), for bits per character
            self.val_tokens_per_char = len(val_ids) / len(valid[0]) if valid else len(self.ids) / max(len(text), 1)
        self.train_batches, self.val_batches = make_batchers(options, self.ids, self.dist, val_ids=val_ids)
        if val_ids is None:
            train_ids, val_ids, _ = split_by_fraction(self.ids, options.val_frac)
        else:
            train_ids = self.ids
        #: <UNK> tokens in the training text: 0 means <UNK> is never a target (saved for eval and score)
        self.unknown_in_training = count_unknown(train_ids, vocab)
        self.unknown_held_out = {"validation": (count_unknown(val_ids, vocab), len(val_ids))}
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
        # every file saved absolute, so a resume works from any directory
        paths = {name: os.path.abspath(getattr(options, name)) for name in ("corpus", "valid", "test")
                 if getattr(options, name) is not None}
        options = dataclasses.replace(options, **paths)
        source = None
        if init_from is not None:  # the source's architecture, vocabulary and weights
            source, source_step = load_source(init_from, self.run_dir)
            options = options.initialized_from(source_architecture(source), given).validate()
        text, self.corpus_sha = load_corpus(options)
        if isinstance(text, PreparedCorpus):  # tokenized once: its vocabulary is the run's
            options = prepared_options(options, text, given_settings(options) if given is None else set(given))
        self.split_files = load_split_files(options)
        valid = self.split_files.get("valid")
        if isinstance(text, PreparedCorpus):
            tokenizer, vocab = text.tokenizer, text.vocab
            if source is not None and (source.vocab != vocab or source.tokenizer != tokenizer):
                raise DataError(
                    f"{text.path} was prepared with another vocabulary than {init_from}; prepare it with "
                    f"`mlxrnn prepare CORPUS --vocab-from {init_from}` to start from that run's weights"
                )
        elif source is not None and isinstance(source.tokenizer, BPETokenizer):
            # a learned tokenizer is kept whole (no tokens can be added to it): every id keeps its meaning
            if options.vocab_size not in (None, len(source.vocab)):
                raise ConfigError(f"`vocab_size` {options.vocab_size}: a run started from a bpe model keeps its "
                                  f"{len(source.vocab)} tokens; leave it out", field="vocab_size")
            tokenizer, vocab = source.tokenizer, source.vocab
        else:
            tokenizer, vocab = build_vocabulary(options, text, valid[0] if valid else None,
                                                base=source.vocab if source else None)[:2]  # tokens freed
        self._build(options, text, vocab, tokenizer, initial_range(options.level))
        test = self.split_files.get("test")
        if test is not None:
            test_ids = encode_corpus(vocab, tokenizer, test[0])
            self.unknown_held_out["test"] = (count_unknown(test_ids, vocab), len(test_ids))
        elif self.prepared_test is not None:
            self.unknown_held_out["test"] = (count_unknown(self.prepared_test[0], vocab), len(self.prepared_test[0]))
        note = untrained_unknown_note(self.unknown_in_training, self.unknown_held_out)
        if note is not None:
            self.log(note)
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
        options, self.split_files = resume_split_files(options, changes, saved.get("split_files_sha256", {}))
        fresh = language_model_from_meta(meta, backend=options.backend)
        try:
            # the saved config's initialisation (None before issue 24), so the config saved stays true
            self._build(options, text, fresh.vocab, fresh.tokenizer, fresh.model.config.embed_init_range)
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
        if self.state.stopped is not None and set(changes) & set(STOP_DECISIONS[self.state.stopped]):
            self.state.stopped = None  # e.g. a larger `patience`: the run trains on
        if self.dist.is_main:
            self.directory.trim_metrics(self.state.step)  # the steps after the checkpoint are done again
        self.how_started.update(resumed=True, changed=changes)
        applied = ", ".join(f"`{name}` {shown_value(name, old)} → {shown_value(name, new)}"
                            for name, (old, new) in changes.items())
        self.log(
            f"resuming {self.run_dir} at step {self.state.step} (epoch {self.state.epoch})"
            + (f" with {applied}" if applied else "")
        )
