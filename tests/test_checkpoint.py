"""Tests for mlxrnn.io.checkpoint: round trips, run directories, validation, fuzzing, SIGKILL safety."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlxrnn.io.checkpoint as ckmod
from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    check_weights,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    save_run_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL, OPTIM, META = "model.safetensors", "optimizer.safetensors", "meta.json"
SHAPES = {"rnn.l0.fwd.W_x": (3, 4), "rnn.l0.fwd.W_h": (4, 4), "head.b": (5,)}
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------------------------------
# helpers


def weights_for(step: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(step))
    return {
        "rnn.l0.fwd.W_x": rng.standard_normal((3, 4)).astype(np.float32) + np.float32(step),
        "rnn.l0.fwd.W_h": rng.standard_normal((4, 4)).astype(np.float32),
        "head.b": rng.standard_normal(5),  # float64
    }


def optimizer_for() -> dict[str, np.ndarray]:
    return {
        "adam.m.rnn.l0.fwd.W_h": np.full((4, 4), 0.25, np.float32),
        "adam.v.head.b": np.linspace(0.0, 1.0, 5),
        "adam.t": np.array(7, np.int64),
        "adam.mask": np.arange(3, dtype=np.int32),
    }


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (relative path -> bytes), including empty dirs."""
    out: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel] = path.read_bytes() if path.is_file() else b"<dir>"
    return out


def fix_sha(ckpt: Path, name: str) -> None:
    """Simulate a deliberate tamper: make meta.json agree with the (modified) file."""
    doc = json.loads((ckpt / META).read_text())
    data = (ckpt / name).read_bytes()
    doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / META).write_text(json.dumps(doc))


def edit_meta(ckpt: Path, edit) -> None:
    doc = json.loads((ckpt / META).read_text())
    edit(doc)
    (ckpt / META).write_text(json.dumps(doc))


def rewrite_header(path: Path, mutate) -> None:
    """Apply ``mutate`` to the JSON header of a safetensors file, keeping the data bytes."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    mutate(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def header_end(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def pointer(run: Path, tag: str) -> str:
    return json.loads((run / f"{tag}.json").read_text())["checkpoint"]


def step_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def expect_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "ck", weights_for(1), {"step": 1, "config": {"hidden": 4}}, optimizer_for())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


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


# ------------------------------------------------------------------------------------------
# corruption and tampering


@pytest.mark.parametrize("name", [MODEL, OPTIM])
@pytest.mark.parametrize("tampered", [False, True])
def test_truncated_safetensors(ckpt: Path, tmp_path: Path, name: str, tampered: bool) -> None:
    full = (ckpt / name).read_bytes()
    end = header_end(ckpt / name)
    cuts = sorted({0, 1, 7, 8, 9, 20, end - 1, end, end + 1, len(full) - 4, len(full) - 1})
    for cut in cuts:
        target = tmp_path / f"cut-{cut}"
        shutil.copytree(ckpt, target)
        (target / name).write_bytes(full[:cut])
        if tampered:
            fix_sha(target, name)
            expect_error("(not a valid safetensors file|has dtype|NaN)", load_checkpoint, target)
        else:
            expect_error("corrupted or modified since it was saved", load_checkpoint, target)


@pytest.mark.parametrize("name", [MODEL, OPTIM])
def test_flipped_bytes_fail_the_hash(ckpt: Path, tmp_path: Path, name: str) -> None:
    full = (ckpt / name).read_bytes()
    for pos in (0, 8, 30, header_end(ckpt / name), len(full) - 1):
        target = tmp_path / f"flip-{pos}"
        shutil.copytree(ckpt, target)
        data = bytearray(full)
        data[pos] ^= 0x10
        (target / name).write_bytes(bytes(data))
        expect_error("corrupted or modified since it was saved", load_checkpoint, target)
    assert load_checkpoint(ckpt).meta["step"] == 1  # the original is intact


def test_tampered_header_is_caught(ckpt: Path, tmp_path: Path) -> None:
    def variant(label: str, mutate, fix: bool = True) -> Path:
        target = tmp_path / label
        shutil.copytree(ckpt, target)
        rewrite_header(target / MODEL, mutate)
        if fix:
            fix_sha(target, MODEL)
        return target

    def set_shape(shape):
        return lambda h: h["rnn.l0.fwd.W_h"].__setitem__("shape", shape)

    # Same byte count: parses, but the shape check catches it.
    same_size = variant("same-size", set_shape([2, 8]))
    loaded = load_checkpoint(same_size)
    assert loaded.weights["rnn.l0.fwd.W_h"].shape == (2, 8)
    message = expect_error("has shape", check_weights, loaded.weights, SHAPES)
    assert message.startswith("weight 'rnn.l0.fwd.W_h' has shape (2, 8); the model expects (4, 4)")
    # Different byte count: the parser rejects it.
    expect_error("not a valid safetensors file", load_checkpoint, variant("bigger", set_shape([5, 4])))
    # Overlapping / out-of-range offsets and an unknown dtype.
    expect_error(
        "not a valid safetensors",
        load_checkpoint,
        variant("offsets", lambda h: h["rnn.l0.fwd.W_h"].__setitem__("data_offsets", [0, 64])),
    )
    expect_error(
        "not a valid safetensors|unsupported dtype",
        load_checkpoint,
        variant("bf16", lambda h: h["rnn.l0.fwd.W_h"].update(dtype="BF16", shape=[4, 8])),
    )
    # Retyped float -> int of the same size: weights must be floating point.
    expect_error(
        "has dtype int32", load_checkpoint, variant("int", lambda h: h["rnn.l0.fwd.W_h"].__setitem__("dtype", "I32"))
    )
    # Without updating meta.json the hash catches any header change.
    expect_error("corrupted or modified", load_checkpoint, variant("nofix", set_shape([2, 8]), False))


@pytest.mark.parametrize(
    ("name", "tensors", "match"),
    [
        (MODEL, {"w": np.ones(3, np.float16)}, "dtype float16"),
        (MODEL, {"w": np.ones(3, np.int64)}, "dtype int64"),
        (MODEL, {"w": np.ones(3, bool)}, "dtype bool"),
        (OPTIM, {"m": np.ones(3, np.uint8)}, "dtype uint8"),
        (OPTIM, {"m": np.ones(3, np.complex64)}, "dtype complex64"),
        (MODEL, {"w": np.array([1.0, np.nan], np.float32)}, "contains NaN or Inf"),
        (MODEL, {"w": np.array([-np.inf])}, "contains NaN or Inf"),
    ],
)
def test_bad_tensors_in_a_consistent_file(ckpt: Path, name, tensors, match) -> None:
    (ckpt / name).write_bytes(stnp.save(tensors))
    fix_sha(ckpt, name)
    expect_error(match, load_checkpoint, ckpt)


def test_optimizer_may_hold_integers_and_nonfinite_values(ckpt: Path) -> None:
    tensors = {"t": np.array([3], np.int64), "v": np.array([np.inf], np.float32)}
    (ckpt / OPTIM).write_bytes(stnp.save(tensors))
    fix_sha(ckpt, OPTIM)
    assert load_checkpoint(ckpt).optimizer_tensors["t"].tolist() == [3]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(library="torch"), r"written by another library \('torch'\)"),
        (lambda d: d.pop("library"), "written by another library"),
        (
            lambda d: d.update(format_version=FORMAT_VERSION + 1),
            rf"written by a newer mlxrnn \(format {FORMAT_VERSION + 1}\); upgrade mlxrnn",
        ),
        (lambda d: d.update(format_version="1"), "invalid format_version"),
        (lambda d: d.update(format_version=1.0), "invalid format_version"),
        (lambda d: d.update(format_version=True), "invalid format_version"),
        (lambda d: d.update(format_version=0), "invalid format_version"),
        (lambda d: d.pop("format_version"), "invalid format_version"),
        (lambda d: d.update(meta=[1]), "no 'meta' object"),
        (lambda d: d.pop("files"), "does not list model.safetensors"),
        (lambda d: d["files"].pop(MODEL), "does not list model.safetensors"),
        (lambda d: d["files"].update({"../../etc/passwd": d["files"][MODEL]}), "unexpected file"),
        (lambda d: d["files"][MODEL].update(sha256="ab" * 31), "invalid entry"),
        (lambda d: d["files"][MODEL].update(bytes=-1), "invalid entry"),
        (lambda d: d["files"][OPTIM].update(bytes=3), "corrupted or modified since it was saved"),
        (lambda d: d["files"][MODEL].update(sha256="0" * 64), "corrupted or modified since"),
    ],
)
def test_meta_json_validation(ckpt: Path, edit, match) -> None:
    edit_meta(ckpt, edit)
    expect_error(match, load_checkpoint, ckpt)


@pytest.mark.parametrize("content", [b"", b"{", b"not json", b"\xff\xfe{}", b"[1, 2, 3]", b'"mlxrnn"', b"[" * 100_000])
def test_meta_json_not_a_json_object(ckpt: Path, content: bytes) -> None:
    (ckpt / META).write_bytes(content)
    expect_error("meta.json (is not valid JSON|holds a)", load_checkpoint, ckpt)


def test_check_weights_names_and_shapes() -> None:
    good = {name: np.zeros(shape) for name, shape in SHAPES.items()}
    check_weights(good, SHAPES)
    check_weights(good, {k: list(v) for k, v in SHAPES.items()})  # lists are fine too
    partial = {k: v for k, v in good.items() if k != "head.b"}
    partial["extra.w"] = np.zeros(2)
    message = expect_error("do not match the model", check_weights, partial, SHAPES)
    assert "missing ['head.b']" in message and "unexpected ['extra.w']" in message
    many = {f"w{i}": np.zeros(1) for i in range(9)}
    assert "and 4 more" in expect_error("unexpected", check_weights, many, {})
    # A vocabulary that does not match the embedding: the first mismatching weight is named.
    wrong = dict(good, **{"rnn.l0.fwd.W_x": np.zeros((7, 4))})
    message = expect_error("has shape", check_weights, wrong, SHAPES)
    assert message.startswith("weight 'rnn.l0.fwd.W_x' has shape (7, 4); the model expects (3, 4)")


# ------------------------------------------------------------------------------------------
# fuzzing


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fuzz") / "run"
    save_run_checkpoint(run, 1, weights_for(1), {"step": 1, "vocab": ["a", "b"]}, optimizer_for())
    return run


CK = "checkpoints/step-00000001/"
FUZZ_TARGETS = [CK + MODEL, CK + OPTIM, CK + META, "last.json"]


@st.composite
def mutated(draw, original: bytes) -> bytes:
    buf = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        if not buf:
            buf += draw(st.binary(min_size=1, max_size=8))
            continue
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":  # JSON-ish bytes make header mutations that still parse as JSON
            buf[i] = draw(st.sampled_from(list(b'0123456789{}[]":,-. eEFI\x00\xff')))
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[i : i + draw(st.integers(1, 8))]
        else:
            del buf[i:]
    return bytes(buf)


PRISTINE_META = {"step": 1, "vocab": ["a", "b"]}


def _tensor_bytes(arrays: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Exact content of a tensor dict: name -> (dtype, shape, bytes)."""
    return {k: (np.dtype(v.dtype).newbyteorder("="), v.shape, np.ascontiguousarray(v).tobytes())
            for k, v in arrays.items()}


def _parse_json(data: bytes):
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def run_loader_on(run: Path, pristine: Path) -> None:
    """Load ``run`` (a copy of ``pristine`` with one file changed) by tag; either a one-line
    CheckpointError, or a load that holds exactly what the files on disk hold and that the
    hashes recorded in meta.json vouch for. Loading never changes a file."""
    before = snapshot(run)
    original_doc = json.loads((pristine / CK / META).read_text())
    for tag in ("last", "best"):
        try:
            loaded = load_checkpoint(run, tag)
        except CheckpointError as exc:
            assert "\n" not in str(exc)
            continue
        assert loaded.path.resolve() == (run / CK).resolve()  # the only checkpoint there is
        doc = _parse_json((run / CK / META).read_bytes())
        assert doc is not None, "meta.json must parse as a JSON object for a load to succeed"
        assert loaded.meta == doc["meta"]
        assert MODEL in doc["files"], "a load without a listed model file"
        for name, held in ((MODEL, loaded.weights), (OPTIM, loaded.optimizer_tensors)):
            if name not in doc["files"]:
                assert held == {}, f"{name} is not listed in meta.json, yet tensors were loaded from it"
                continue
            data = (run / CK / name).read_bytes()
            # A changed file under an unchanged hash must be refused: what loads is what was hashed.
            assert doc["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            assert _tensor_bytes(held) == _tensor_bytes(stnp.load(data)), f"{name}: loaded != the file's tensors"
            if data == (pristine / CK / name).read_bytes():
                assert doc["files"][name] == original_doc["files"][name]
        expected = {MODEL: weights_for(1), OPTIM: optimizer_for()}
        for name, held in ((MODEL, loaded.weights), (OPTIM, loaded.optimizer_tensors)):
            if name in doc["files"] and (run / CK / name).read_bytes() == (pristine / CK / name).read_bytes():
                assert _tensor_bytes(held) == _tensor_bytes(expected[name]), f"{name}: not the saved tensors"
        for arr in loaded.weights.values():
            assert arr.dtype in (np.float32, np.float64) and np.isfinite(arr).all()
    assert snapshot(run) == before  # loading never modifies (or creates) files


@FUZZ
@given(target=st.sampled_from(FUZZ_TARGETS), fix=st.booleans(), data=st.data())
def test_fuzz_loader_raises_only_checkpoint_error(pristine_run, target, fix, data) -> None:
    original = (pristine_run / target).read_bytes()
    if data.draw(st.booleans(), label="random"):
        new = data.draw(st.binary(max_size=400), label="bytes")
    else:
        new = data.draw(mutated(original), label="mutated")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(pristine_run, run)
        (run / target).write_bytes(new)
        if fix and target.endswith(".safetensors"):  # reach the parser past the hash check
            fix_sha(run / CK, target.rsplit("/", 1)[1])
        if target.endswith(".safetensors") and not fix and new != original:
            for tag in ("last", "best"):  # a changed tensor file under the recorded hash
                expect_error("corrupted or modified since it was saved", load_checkpoint, run, tag)
        if new == original:
            assert load_checkpoint(run).meta == PRISTINE_META
        run_loader_on(run, pristine_run)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    where=st.sampled_from(
        [
            "library",
            "format_version",
            "created",
            "files",
            "meta",
            "files.model",
            "files.model.sha256",
            "files.model.bytes",
            "files.optimizer",
            "files.extra",
        ]
    ),
    value=json_values,
    delete=st.booleans(),
)
def test_fuzz_meta_json_structure(pristine_run, where, value, delete) -> None:
    doc = json.loads((pristine_run / CK / META).read_text())
    container, key = {
        "files.model": (doc["files"], MODEL),
        "files.optimizer": (doc["files"], OPTIM),
        "files.extra": (doc["files"], "extra"),
        "files.model.sha256": (doc["files"][MODEL], "sha256"),
        "files.model.bytes": (doc["files"][MODEL], "bytes"),
    }.get(where, (doc, where))
    if delete:
        container.pop(key, None)
    else:
        container[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(pristine_run, run)
        (run / CK / META).write_text(json.dumps(doc))
        run_loader_on(run, pristine_run)


def test_a_changed_tensor_under_an_unchanged_hash_is_refused(pristine_run, tmp_path: Path) -> None:
    """Same names, shapes, dtypes and byte count, other values: only the sha256 can tell."""
    for name, tensors in ((MODEL, {k: v + 1 for k, v in weights_for(1).items()}),
                          (OPTIM, {**optimizer_for(), "adam.t": np.array(8, np.int64)})):
        run = tmp_path / name
        shutil.copytree(pristine_run, run)
        data = stnp.save(tensors)
        assert len(data) == (run / CK / name).stat().st_size and data != (run / CK / name).read_bytes()
        (run / CK / name).write_bytes(data)
        expect_error(f"{name} in checkpoint .* is corrupted or modified since it was saved", load_checkpoint, run)
        fix_sha(run / CK, name)  # a deliberate edit that also updates the hash loads, with the new values
        loaded = load_checkpoint(run)
        held = loaded.weights if name == MODEL else loaded.optimizer_tensors
        assert _tensor_bytes(held) == _tensor_bytes(tensors)


# ------------------------------------------------------------------------------------------
# crash safety

CRASH_WRITER = r"""
import sys
import numpy as np
from mlxrnn.io.checkpoint import save_run_checkpoint

run, step = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:
    step += 1
    weights = {"a": np.full((512, 512), step, np.float32), "b": np.full((256, 512), step, np.float64)}
    optimizer = {"m": np.full((512, 512), step, np.float32), "t": np.full((1,), step, np.int64)}
    tags = ("last", "best") if step % 3 == 0 else ("last",)
    save_run_checkpoint(run, step, weights, {"step": step}, optimizer, tags=tags)
"""


def assert_consistent(loaded: Checkpoint) -> int:
    step = loaded.meta["step"]
    assert loaded.path.name.startswith(f"step-{step:08d}")
    assert sorted(loaded.weights) == ["a", "b"] and sorted(loaded.optimizer_tensors) == ["m", "t"]
    assert loaded.weights["a"].shape == (512, 512) and loaded.weights["b"].shape == (256, 512)
    for arr in [*loaded.weights.values(), *loaded.optimizer_tensors.values()]:
        assert (arr == step).all()
    return step


def crash_save(run: Path, step: int, tags=("last",)) -> Path:
    weights = {"a": np.full((512, 512), step, np.float32), "b": np.full((256, 512), step, np.float64)}
    optimizer = {"m": np.full((512, 512), step, np.float32), "t": np.full((1,), step, np.int64)}
    return save_run_checkpoint(run, step, weights, {"step": step}, optimizer, tags=tags)


@pytest.mark.skipif(os.name == "nt", reason="needs POSIX SIGKILL and pid liveness checks")
def test_sigkill_during_saves_never_corrupts_the_latest_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    crash_save(run, 0, tags=("last", "best"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    rng = random.Random(20240611)
    last_step = 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(run), str(last_step)],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.05, 0.35))
            assert proc.poll() is None, "the writer died on its own"
        finally:
            proc.kill()  # SIGKILL: no cleanup handlers run
            proc.wait()
            proc.stdout.close()
        step = assert_consistent(load_checkpoint(run))
        assert step >= last_step
        best = assert_consistent(load_checkpoint(run, "best"))
        assert best % 3 == 0 and best <= step
        for path in list_checkpoints(run):  # every published directory is complete
            assert_consistent(load_checkpoint(path))
        last_step = step  # resume from the last good checkpoint, like a restarted trainer
    assert last_step > 8, "the writer never got to save: the test exercised nothing"

    final = crash_save(run, last_step + 1)
    referenced = {pointer(run, "last").split("/")[1], pointer(run, "best").split("/")[1]}
    assert final.name in referenced
    assert set(step_dirs(run)) == referenced  # orphans and stale .tmp-* dirs are gone
    assert sorted(os.listdir(run)) == ["best.json", "checkpoints", "last.json"]


def small_save(run: Path, step: int, tags) -> Path:
    weights = {"a": np.full((64, 64), step, np.float32), "b": np.full((8,), step, np.float64)}
    optimizer = {"m": np.full((64, 64), step, np.float32), "t": np.full((1,), step, np.int64)}
    return save_run_checkpoint(run, step, weights, {"step": step}, optimizer, tags=tags)


def small_step(loaded: Checkpoint) -> int:
    step = loaded.meta["step"]
    assert loaded.path.name.startswith(f"step-{step:08d}")
    assert sorted(loaded.weights) == ["a", "b"] and sorted(loaded.optimizer_tensors) == ["m", "t"]
    for arr in [*loaded.weights.values(), *loaded.optimizer_tensors.values()]:
        assert (arr == step).all()
    return step


def _die_at_event(number: int, run: Path) -> None:
    """In a forked child: SIGKILL ourselves right before the ``number``-th file-system call."""
    import signal

    counter = iter(range(1, 1_000_000))

    def hooked(fn):
        def wrapper(*args, **kwargs):
            if next(counter) == number:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)

        return wrapper

    for module, name in [
        (os, "mkdir"),
        (os, "fsync"),
        (os, "rename"),
        (os, "replace"),
        (os, "unlink"),
        (os, "rmdir"),
        (shutil, "rmtree"),
    ]:
        setattr(module, name, hooked(getattr(module, name)))
    small_save(run, 2, ("last",))
    small_save(run, 3, ("last", "best"))  # publishes step 3, then prunes steps 1 and 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_every_file_system_step_is_recoverable(tmp_path: Path) -> None:
    """Deterministic complement to the random-kill test: die before each I/O call in turn."""
    pristine = tmp_path / "pristine"
    small_save(pristine, 1, ("last", "best"))
    seen_last = []
    for number in range(1, 200):
        run = tmp_path / f"run-{number}"
        shutil.copytree(pristine, run)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                _die_at_event(number, run)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        last = small_step(load_checkpoint(run))
        best = small_step(load_checkpoint(run, "best"))
        for path in list_checkpoints(run):
            small_step(load_checkpoint(path))
        assert best in (1, 3) and best <= last
        seen_last.append(last)
        small_save(run, 4, ("last",))  # the next save cleans up whatever the crash left
        assert set(step_dirs(run)) == {pointer(run, "last")[12:], pointer(run, "best")[12:]}
        assert sorted(os.listdir(run)) == ["best.json", "checkpoints", "last.json"]
        shutil.rmtree(run)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, "the child failed without being killed"
            break
        assert os.WTERMSIG(status) == 9
    else:
        pytest.fail("the child never finished: more file-system calls than expected")
    assert seen_last == sorted(seen_last), "'last' went backwards at some crash point"
    assert set(seen_last) == {1, 2, 3} and number > 20
