"""Damaged checkpoints: truncated, flipped, tampered and fuzzed files raise only CheckpointError."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp
from hypothesis import given
from hypothesis import strategies as st

from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint import (
    FORMAT_VERSION,
    check_weights,
    load_checkpoint,
    save_run_checkpoint,
)
from tests.checkpoint_support import (
    FUZZ,
    META,
    MODEL,
    OPTIM,
    SHAPES,
    ckpt,  # noqa: F401 (pytest fixtures)
    edit_meta,
    expect_error,
    fix_sha,
    header_end,
    optimizer_for,
    rewrite_header,
    snapshot,
    weights_for,
)

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


