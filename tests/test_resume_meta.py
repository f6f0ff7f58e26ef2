"""The checks of a checkpoint's training part before a resume (mlxrnn/run/resume.py), one by one.

The end-to-end damage tests (tests/test_reliability_resume.py) edit a real run; here each check's
boundary is tried directly: the keys and their JSON types (a bool is no int), the sha256, the
world size (1 is the least), options a newer mlxrnn would write, the schedule's state in runs
saved before schedules kept their own, and the random-number state.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.errors import CheckpointError, DataError
from mlxrnn.run.resume import check_training_meta, restore_rng, saved_options, schedule_state

RUN = Path("runs/somewhere")
GOOD = {"options": {"lr": 0.01}, "optimizer": {}, "rng": {}, "state": {"step": 3}, "corpus_sha256": "a" * 64}


def _meta(**changes):
    training = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            training.pop(key)
        else:
            training[key] = value
    return {"training": training}


def test_a_complete_training_part_is_returned_as_it_is():
    meta = _meta(world_size=1, schedule={"name": "none"}, split_files_sha256={})
    assert check_training_meta(meta, RUN) is meta["training"]
    assert check_training_meta(_meta(), RUN) == GOOD  # world_size, schedule and split files are optional


@pytest.mark.parametrize("meta", [{}, {"training": []}, {"training": {"optimizer": {}}}], ids=["none", "list", "no-options"])
def test_a_checkpoint_not_written_by_train_is_not_resumable(meta):
    with pytest.raises(DataError, match="was not written by `mlxrnn train`"):
        check_training_meta(meta, RUN)


@pytest.mark.parametrize("missing", ["optimizer", "rng", "state", "corpus_sha256"])
def test_each_required_part_is_named_when_missing(missing):
    with pytest.raises(CheckpointError, match=f"its training state lacks {missing}; it was modified or damaged"):
        check_training_meta(_meta(**{missing: None}), RUN)


@pytest.mark.parametrize("key,value,kind", [("world_size", True, "bool"), ("world_size", 1.0, "float"),
                                            ("state", [], "list"), ("corpus_sha256", 7, "int"),
                                            ("schedule", "none", "str"), ("split_files_sha256", [], "list")])
def test_each_part_has_its_json_type_and_a_bool_is_no_int(key, value, kind):
    with pytest.raises(CheckpointError, match=f"its training state's '{key}' is {kind}"):
        check_training_meta(_meta(**{key: value}), RUN)


def test_the_corpus_hash_world_size_and_unknown_keys_are_checked():
    for sha in ("A" * 64, "a" * 63, "g" * 64, "a" * 65):
        with pytest.raises(CheckpointError, match="its corpus_sha256 is not a sha256"):
            check_training_meta(_meta(corpus_sha256=sha), RUN)
    for size in (0, -2):
        with pytest.raises(CheckpointError, match=f"its world_size is {size}"):
            check_training_meta(_meta(world_size=size), RUN)
    assert check_training_meta(_meta(world_size=2), RUN)["world_size"] == 2
    with pytest.raises(CheckpointError, match=r"training state this mlxrnn does not know \(future, zeta\)"):
        check_training_meta(_meta(zeta=1, future={}), RUN)
    with pytest.raises(CheckpointError, match=r"has options this mlxrnn does not know \(warp\)"):
        check_training_meta(_meta(options={"lr": 0.01, "warp": 9}), RUN)


def test_saved_options_that_do_not_validate_are_damage():
    assert saved_options({"options": {"lr": 0.5}}, RUN).lr == 0.5
    with pytest.raises(CheckpointError, match="its saved option"):
        saved_options({"options": {"lr": -1.0}}, RUN)


def test_the_schedule_state_and_its_legacy_place_in_the_run_state():
    saved = {"schedule": {"name": "plateau", "best": 2.0}, "state": {}}
    assert schedule_state(saved, RUN) == {"name": "plateau", "best": 2.0}
    legacy = {"state": {"sched_best": 1.5, "bad_evals": 2, "base_lr": 0.1}}  # exactly the legacy keys
    assert schedule_state(legacy, RUN) == {"best": 1.5, "bad_evals": 2, "base_lr": 0.1}
    legacy["state"]["step"] = 4
    assert schedule_state(legacy, RUN)["bad_evals"] == 2
    for lacking in ({"step": 4}, {"sched_best": 1.5, "bad_evals": 2}):
        with pytest.raises(CheckpointError, match="its training state lacks schedule"):
            schedule_state({"state": lacking}, RUN)


def test_a_malformed_random_state_is_refused_and_not_half_applied():
    generator = np.random.default_rng(1)
    good = np.random.default_rng(7).bit_generator.state
    restore_rng(generator, good, RUN)
    assert generator.bit_generator.state == good
    before = generator.bit_generator.state
    for bad in ({}, {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}, {"bit_generator": "MT19937"}):
        with pytest.raises(CheckpointError, match="its random-number state is malformed"):
            restore_rng(generator, bad, RUN)
        assert generator.bit_generator.state == before
