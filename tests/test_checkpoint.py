"""Checkpoints: exact round trips, the on-disk format (safetensors + JSON, no pickle), run directories
and their pointers, resolving paths. Helpers: tests/checkpoint_support.py."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlxrnn.io.checkpoint as ckmod
from mlxrnn.io.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    save_run_checkpoint,
)
from tests.checkpoint_support import (
    META,
    MODEL,
    OPTIM,
    ckpt,  # noqa: F401 (pytest fixtures)
    dead_pid,
    expect_error,
    fix_sha,
    optimizer_for,
    pointer,
    snapshot,
    step_dirs,
    weights_for,
)

# ------------------------------------------------------------------------------------------
# round trips and the on-disk format


def test_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = {
        "f32": rng.standard_normal((7, 5)).astype(np.float32),
        "f64": rng.standard_normal((3, 2, 2)),
        "extremes32": np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -0.0], np.float32),
        "extremes64": np.array([np.finfo(np.float64).max, 5e-324, -0.0, 0.1]),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 3), np.float32),
        "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,  # non-contiguous view
        "big_endian": np.arange(4, dtype=">f4"),
    }
    optimizer = optimizer_for()
    meta = {
        "step": 2**62,
        "config": {"cell": "lstm", "layers": [{"hidden": 64, "bidirectional": True}], "p": 0.1},
        "vocab": ["<pad>", "é", "日本", "\n", '"quoted"'],
        "rng": {"state": [1, 2, 3], "seed": None},
        "metrics": {"val_loss": 1e-300, "history": [[1, 2.5], [2, 2.25]]},
    }
    path = save_checkpoint(tmp_path / "ck", weights, meta, optimizer)
    assert path == tmp_path / "ck"
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint)
    assert loaded.path == path
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.meta == meta
    assert sorted(loaded.weights) == sorted(weights)
    for name, arr in weights.items():
        got = loaded.weights[name]
        assert got.dtype == arr.dtype.newbyteorder("="), name
        assert got.shape == arr.shape, name
        assert got.tobytes() == np.ascontiguousarray(arr, got.dtype).tobytes(), name  # bitwise
    assert sorted(loaded.optimizer_tensors) == sorted(optimizer)
    for name, arr in optimizer.items():
        assert loaded.optimizer_tensors[name].dtype == arr.dtype
        np.testing.assert_array_equal(loaded.optimizer_tensors[name], arr)
    loaded.weights["f32"][0, 0] = 123.0  # loaded arrays are ordinary writable arrays


def test_meta_json_records_library_version_time_and_hashes(ckpt: Path) -> None:
    doc = json.loads((ckpt / META).read_text(encoding="utf-8"))
    assert doc["library"] == "mlxrnn"
    assert doc["format_version"] == FORMAT_VERSION == 1
    assert doc["created"].endswith("Z") and doc["created"][:2] == "20"
    assert doc["meta"] == {"step": 1, "config": {"hidden": 4}}
    assert set(doc["files"]) == {MODEL, OPTIM}
    for name, entry in doc["files"].items():
        data = (ckpt / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert sorted(os.listdir(ckpt)) == [META, MODEL, OPTIM]
    assert load_checkpoint(ckpt).created == doc["created"]


def test_no_optimizer_file_without_optimizer_state(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a", weights_for(), {"step": 0})
    assert sorted(os.listdir(path)) == [META, MODEL]
    assert load_checkpoint(path).optimizer_tensors == {}
    empty = save_checkpoint(tmp_path / "b", weights_for(), {}, optimizer_tensors={})
    assert (empty / OPTIM).exists()
    assert load_checkpoint(empty).optimizer_tensors == {}


def test_checkpoint_directories_are_immutable(ckpt: Path) -> None:
    before = snapshot(ckpt)
    expect_error("already exists", save_checkpoint, ckpt, weights_for(9), {"step": 9})
    assert snapshot(ckpt) == before
    assert not [p for p in os.listdir(ckpt.parent) if p.startswith(".tmp-")]


@pytest.mark.parametrize(
    ("weights", "meta", "optimizer", "match"),
    [
        ({"w": [1.0, 2.0]}, {}, None, "not a NumPy array"),
        ({"w": np.ones(2, np.float16)}, {}, None, "dtype float16"),
        ({"w": np.ones(2, np.int32)}, {}, None, "dtype int32"),
        ({"w": np.array([1.0, np.nan])}, {}, None, "NaN or Inf"),
        ({"w": np.array([np.inf], np.float32)}, {}, None, "NaN or Inf"),
        ({1: np.ones(2)}, {}, None, "invalid weight name"),
        ({"__metadata__": np.ones(2)}, {}, None, "invalid weight name"),
        ({"w": np.ones(2)}, {"loss": np.float32(1.0)}, None, r"\.item\(\)"),
        ({"w": np.ones(2)}, {"vocab": {1: "a"}}, None, "keys must be strings"),
        ({"w": np.ones(2)}, {"best": float("inf")}, None, "use None"),
        ({"w": np.ones(2)}, {"x": {1, 2}}, None, "not JSON-serialisable"),
        ({"w": np.ones(2)}, [("step", 1)], None, "meta must be a dict"),
        ({"w": np.ones(2)}, {}, {"m": np.ones(2, np.uint8)}, "dtype uint8"),
        ({"w": np.ones(2)}, {}, {"m": "x"}, "not a NumPy array"),
    ],
)
def test_save_rejects_bad_input_and_leaves_nothing(tmp_path: Path, weights, meta, optimizer, match) -> None:
    expect_error(match, save_checkpoint, tmp_path / "ck", weights, meta, optimizer)
    expect_error(match, save_run_checkpoint, tmp_path / "run", 1, weights, meta, optimizer)
    assert os.listdir(tmp_path) == []


def test_write_failure_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    expect_error("could not write checkpoint", save_checkpoint, blocker / "ck", weights_for(), {})
    expect_error("could not write checkpoint", save_run_checkpoint, blocker, 1, weights_for(), {})


def test_module_imports_nothing_that_can_execute_code() -> None:
    imported = set()
    modules = sorted(Path(ckmod.__file__).parent.glob("*.py"))  # the package: format, durable, pointers, load
    assert {m.stem for m in modules} >= {"__init__", "format", "durable", "pointers", "load"}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "__import__", "compile"}
    roots = {name.split(".")[0] for name in imported}
    assert not roots & {"pickle", "marshal", "shelve", "dill", "torch", "mlx", "joblib"}
    assert {n for n in imported if n.startswith("safetensors")} == {"safetensors.numpy"}
    assert "numpy" in roots


def test_loading_a_pickle_never_executes_it(ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    for name in (MODEL, META):
        target = tmp_path / f"evil-{name}"
        shutil.copytree(ckpt, target)
        (target / name).write_bytes(payload)
        if name != META:
            fix_sha(target, name)
        expect_error("corrupted", load_checkpoint, target)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# run directories


def test_run_pointers_and_pruning(tmp_path: Path) -> None:
    run = tmp_path / "run"
    p1 = save_run_checkpoint(run, 1, weights_for(1), {"step": 1}, tags=("last", "best"))
    assert p1 == run / "checkpoints" / "step-00000001"
    assert pointer(run, "last") == pointer(run, "best") == "checkpoints/step-00000001"
    save_run_checkpoint(run, 2, weights_for(2), {"step": 2})
    save_run_checkpoint(run, 3, weights_for(3), {"step": 3}, optimizer_for())
    assert pointer(run, "last") == "checkpoints/step-00000003"
    assert pointer(run, "best") == "checkpoints/step-00000001"
    assert step_dirs(run) == ["step-00000001", "step-00000003"]  # step 2 was pruned
    assert load_checkpoint(run).meta == {"step": 3}
    assert load_checkpoint(run, tag="last").optimizer_tensors.keys() == optimizer_for().keys()
    assert load_checkpoint(run, tag="best").meta == {"step": 1}
    np.testing.assert_array_equal(load_checkpoint(run, "best").weights["head.b"], weights_for(1)["head.b"])
    save_run_checkpoint(run, 4, weights_for(4), {"step": 4}, tags="swa")  # a custom tag
    save_run_checkpoint(run, 5, weights_for(5), {"step": 5}, tags=["last", "best"])
    assert step_dirs(run) == ["step-00000004", "step-00000005"]
    assert load_checkpoint(run, "swa").meta == {"step": 4}
    assert [p.name for p in list_checkpoints(run)] == ["step-00000004", "step-00000005"]
    assert sorted(os.listdir(run)) == ["best.json", "checkpoints", "last.json", "swa.json"]


def test_best_falls_back_to_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_run_checkpoint(run, 3, weights_for(3), {"step": 3})
    assert not (run / "best.json").exists()
    assert resolve_checkpoint(run, "best") == resolve_checkpoint(run) == run / "checkpoints/step-00000003"
    assert load_checkpoint(run, "best").meta == {"step": 3}
    expect_error("no 'swa' checkpoint", load_checkpoint, run, "swa")


def test_same_step_is_reused_not_rewritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = save_run_checkpoint(run, 5, weights_for(5), {"step": 5, "tag": "last"})
    ino = (first / MODEL).stat().st_ino
    before = snapshot(first)
    again = save_run_checkpoint(run, 5, weights_for(5), {"step": 5, "tag": "best"}, tags=("best",))
    assert again == first
    assert (first / MODEL).stat().st_ino == ino and snapshot(first) == before
    assert pointer(run, "best") == pointer(run, "last") == "checkpoints/step-00000005"
    # Same step, different tensors (resumed from an earlier checkpoint): never overwrite.
    other = save_run_checkpoint(run, 5, weights_for(6), {"step": 5, "resumed": True})
    assert other.name == "step-00000005-1"
    assert snapshot(first) == before
    assert load_checkpoint(run).meta == {"step": 5, "resumed": True}
    assert load_checkpoint(run, "best").meta == {"step": 5, "tag": "last"}
    assert step_dirs(run) == ["step-00000005", "step-00000005-1"]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000005", "step-00000005-1"]


def test_stale_temporaries_are_removed_and_others_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_run_checkpoint(run, 1, weights_for(1), {"step": 1})
    ckdir = run / "checkpoints"
    dead, own = dead_pid(), os.getpid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [
            ckdir / f".tmp-step-00000002-{dead}-0123abcd",
            ckdir / f".tmp-del-step-00000000-{dead}-0123abce",
            ckdir / f".tmp-step-00000003-{own}-89abcdef",  # our pid, but not being written
        ]
        for d in stale:
            d.mkdir()
            (d / MODEL).write_bytes(b"partial")
        stale_pointer = run / f".tmp-last.json-{dead}-00000000"
        stale_pointer.write_text("{")
        kept = [
            ckdir / f".tmp-step-00000004-{sleeper.pid}-aaaaaaaa",  # a live writer
            ckdir / "notes",
            run / f".tmp-metrics.csv-{dead}-bbbbbbbb",  # the run dir is shared: not ours
            run / "config.json",
        ]
        kept[0].mkdir()
        kept[1].mkdir()
        kept[2].write_text("x")
        kept[3].write_text('{"hidden": 4}')
        save_run_checkpoint(run, 2, weights_for(2), {"step": 2})
        for path in [*stale, stale_pointer]:
            assert not path.exists(), path
        for path in kept:
            assert path.exists(), path
        assert step_dirs(run) == sorted(["step-00000002", "notes", f".tmp-step-00000004-{sleeper.pid}-aaaaaaaa"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pruning_keeps_everything_when_a_pointer_is_unreadable(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_run_checkpoint(run, 1, weights_for(1), {"step": 1}, tags=("last", "best"))
    (run / "best.json").write_text('{"checkpoint": ')  # hand-damaged
    save_run_checkpoint(run, 2, weights_for(2), {"step": 2})
    assert step_dirs(run) == ["step-00000001", "step-00000002"]
    expect_error("not a valid checkpoint pointer", load_checkpoint, run, "best")
    assert load_checkpoint(run).meta == {"step": 2}


def test_run_checkpoint_argument_errors(tmp_path: Path) -> None:
    w = weights_for()
    expect_error("non-negative integer", save_run_checkpoint, tmp_path, -1, w, {})
    expect_error("non-negative integer", save_run_checkpoint, tmp_path, 1.5, w, {})
    expect_error("non-negative integer", save_run_checkpoint, tmp_path, True, w, {})
    expect_error("tags is empty", save_run_checkpoint, tmp_path, 1, w, {}, tags=())
    expect_error("invalid checkpoint tag", save_run_checkpoint, tmp_path, 1, w, {}, tags=("../x",))
    expect_error("invalid checkpoint tag", load_checkpoint, tmp_path, tag="a/b")
    assert os.listdir(tmp_path) == []
    assert list_checkpoints(tmp_path) == []


# ------------------------------------------------------------------------------------------
# resolve / missing files


def test_resolve_accepts_checkpoint_dirs_run_dirs_and_files_inside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = save_run_checkpoint(run, 7, weights_for(7), {"step": 7})
    assert resolve_checkpoint(run) == path
    assert resolve_checkpoint(path) == path
    assert resolve_checkpoint(str(path / META)) == path
    assert load_checkpoint(path / MODEL).meta == {"step": 7}


def test_resolve_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    message = expect_error("no checkpoint at", resolve_checkpoint, missing)
    assert message == (
        f"no checkpoint at {missing}: expected a run directory with last.json or a checkpoint directory with meta.json"
    )
    (tmp_path / "empty").mkdir()
    expect_error("no checkpoint at", load_checkpoint, tmp_path / "empty")
    expect_error("no checkpoint at", load_checkpoint, tmp_path / "empty", "best")
    (tmp_path / "file.txt").write_text("hello")
    expect_error("no checkpoint at", load_checkpoint, tmp_path / "file.txt")

    run = tmp_path / "run"
    save_run_checkpoint(run, 1, weights_for(1), {"step": 1})
    for content, match in [
        ('{"checkpoint": "checkpoints/step-00000099"}', "missing or not a checkpoint"),
        ('{"checkpoint": "../run2/checkpoints/step-1"}', "outside its run directory"),
        ('{"checkpoint": "/etc"}', "outside its run directory"),
        ('{"checkpoint": 3}', "not a valid checkpoint pointer"),
        ("[1, 2]", "not a valid checkpoint pointer"),
        ("\xff garbage", "not a valid checkpoint pointer"),
        ("", "not a valid checkpoint pointer"),
    ]:
        (run / "last.json").write_text(content, encoding="latin-1")
        expect_error(match, load_checkpoint, run)


@pytest.mark.parametrize("name", [MODEL, OPTIM])
def test_missing_tensor_file(ckpt: Path, name: str) -> None:
    (ckpt / name).unlink()
    expect_error(f"incomplete: {name} is missing", load_checkpoint, ckpt)


def test_missing_meta_json(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = save_run_checkpoint(run, 1, weights_for(1), {"step": 1})
    (path / META).unlink()
    expect_error("no checkpoint at", load_checkpoint, path)
    expect_error("missing or not a checkpoint", load_checkpoint, run)


