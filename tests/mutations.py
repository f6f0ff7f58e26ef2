"""Plant known bugs one at a time and check that the test file meant to catch each one fails.

    python tests/mutations.py                  # every mutation
    python tests/mutations.py temperature-multiplied sha256-skipped
    python tests/mutations.py --baseline       # first check the unpatched test files pass
    python tests/mutations.py --list

Not part of the suite (pytest does not collect this file). Each mutation is planted in a
temporary copy of the tracked files, never in this working tree: the copy is put first on
PYTHONPATH and pytest runs there with ``-x``. A mutation counts as caught only when pytest
exits 1 (tests ran and at least one failed); an import error or a collection error is reported
as such, not as a catch. A patch whose text is no longer found in exactly one file is reported
as stale, so a refactor cannot turn a check into a silent pass.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    old: str  #: the exact text replaced; must occur once in all of ``mlxrnn/**/*.py``
    new: str
    tests: tuple[str, ...]  #: pytest arguments: the test file that must catch it
    why: str


MUTATIONS = [
    # --- the eight bugs of the issue that passed (or were caught only by accident) ----------------
    Mutation("dropout-backward-ignores-mask",
             "                d_layer_out = d_layer_out * cache.dropout_masks[layer]",
             "                d_layer_out = d_layer_out",
             ("tests/test_dropout.py",), "the dropout backward ignores the keep-mask"),
    Mutation("dropout-not-rescaled",
             "    return keep / (1.0 - p)", "    return keep * 1.0",
             ("tests/test_dropout.py",), "dropout keeps units without the 1/(1 - p) rescale"),
    Mutation("carry-kept-across-epochs",
             "state.window, state.epoch, state.carry = 0, state.epoch + 1, None",
             "state.window, state.epoch = 0, state.epoch + 1",
             ("tests/test_carried_state.py",), "the carried state is not reset when the batcher wraps to a new epoch"),
    Mutation("validation-forgets-state",
             "    for inputs, targets in windows:\n        logits, state, _ = lm.model.forward(inputs, initial_state=state, ",
             "    for inputs, targets in windows:\n        logits, state, _ = lm.model.forward(inputs, initial_state=None, ",
             ("tests/test_carried_state.py",), "validation does not carry the state between windows"),
    Mutation("evaluate-ids-forgets-state",  # validation and evaluate_ids share one evaluator: break the stream instead
             "        yield inputs_all[None, start : start + window], ids[None, start : start + window]",
             "        yield (np.concatenate([[lm.start_id], ids[start : start + window - 1]]).astype(np.int32)[None],\n"
             "               ids[None, start : start + window])",
             ("tests/test_carried_state.py",), "evaluate_ids restarts every window from the start token"),
    Mutation("temperature-multiplied",
             "        z /= options.temperature", "        z *= options.temperature",
             ("tests/test_sampling_controls.py",), "sampling temperature applied as a multiplication"),
    Mutation("forget-bias-zero",
             'params["b"][H : 2 * H] = self.forget_bias', 'params["b"][H : 2 * H] = 0.0',
             ("tests/test_initialisation.py",), "the LSTM forget-gate bias initialised to 0 instead of 1"),
    Mutation("sha256-skipped",
             'if hashlib.sha256(data).hexdigest() != entry["sha256"]:',
             "if False:",
             ("tests/test_checkpoint.py", "tests/test_checkpoint_damage.py"), "loading skips the checkpoint's sha256 check"),
    # --- more of the same kind --------------------------------------------------------------------
    Mutation("unk-not-banned",
             "        banned.append(lm.vocab.unk_id)", "        pass",
             ("tests/test_sampling_controls.py",), "<UNK> is drawn although not allowed"),
    Mutation("cross-entropy-without-max-shift",
             "    shifted = np.subtract(rows, rows.max(axis=1, keepdims=True))  # (N, V), ours to overwrite",
             "    shifted = rows.copy()",
             ("tests/test_layers.py",), "softmax cross-entropy overflows for large logits"),
    Mutation("bench-ratio-inverted",
             'row["ratio"] = row["tokens_per_s"] / base["tokens_per_s"]',
             'row["ratio"] = base["tokens_per_s"] / row["tokens_per_s"]',
             ("tests/test_bench.py", "-k", "ratio"), "bench ratios divide the baseline by the implementation"),
    Mutation("compiled-temperature-multiplied",
             "    z /= temperature", "    z *= temperature",
             ("tests/test_compiled_sampling.py",), "the compiled sampler applies the temperature as a multiplication"),
    Mutation("forward-only-reads-one-row",
             "            rec[k, b] += table[ids[b], k]", "            rec[k, b] += table[ids[0], k]",
             ("tests/test_forward_only.py",), "the LSTM kernels that read the projected table's rows read the first sequence's row for all"),
]


def copy_tree(destination: Path) -> None:
    """The tracked files (plus untracked, unignored ones) of this working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def plant(tree: Path, mutation: Mutation) -> Path | None:
    """Apply the mutation in ``tree``; the file patched, or None when the text is not found exactly once."""
    hits = [(path, path.read_text(encoding="utf-8")) for path in sorted((tree / "mlxrnn").rglob("*.py"))]
    hits = [(path, text) for path, text in hits if mutation.old in text]
    if len(hits) != 1 or hits[0][1].count(mutation.old) != 1:
        return None
    path, text = hits[0]
    path.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")
    return path


def run_pytest(tree: Path, args: tuple[str, ...]) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args], cwd=tree,
                          env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    failed = [line.split(" - ")[0].removeprefix("FAILED ") for line in lines if line.startswith("FAILED ")]
    summary = lines[-1] if lines else proc.stderr.strip()[-200:]
    return proc.returncode, summary + (f"; first failure: {failed[0]}" if failed else "")


def imports_from(tree: Path) -> bool:
    """Whether ``import mlxrnn`` in the copy loads the copy (not an installed or editable one)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", "import mlxrnn; print(mlxrnn.__file__)"], cwd=tree, env=env,
                         capture_output=True, text=True).stdout.strip()
    return out.startswith(str(tree))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true", help="first check the unpatched test files pass")
    options = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    if options.list:
        for m in MUTATIONS:
            print(f"{m.name:34} {' '.join(m.tests):45} {m.why}")
        return 0
    unknown = [n for n in options.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(unknown)}; see --list")
    chosen = [known[n] for n in options.names] if options.names else MUTATIONS
    failures = 0
    with tempfile.TemporaryDirectory(prefix="mlxrnn-mutations-") as scratch:
        pristine = Path(scratch) / "pristine"
        copy_tree(pristine)
        if not imports_from(pristine):
            print("error: the copy's mlxrnn is not the one imported there; check PYTHONPATH", file=sys.stderr)
            return 2
        if options.baseline:
            for args in dict.fromkeys(m.tests for m in chosen):
                code, summary = run_pytest(pristine, args)
                print(f"{'baseline ok' if code == 0 else 'BASELINE FAILS':16} {' '.join(args):45} {summary}")
                failures += code != 0
        for mutation in chosen:
            tree = Path(scratch) / mutation.name
            shutil.copytree(pristine, tree)
            started = time.perf_counter()
            patched = plant(tree, mutation)
            if patched is None:
                verdict, summary = "STALE", "the text to replace is not found exactly once; update this mutation"
            else:
                code, summary = run_pytest(tree, mutation.tests)
                verdict = {0: "MISSED", 1: "caught"}.get(code, f"ERROR ({code})")
            failures += verdict != "caught"
            print(f"{verdict:16} {mutation.name:34} {' '.join(mutation.tests):45} "
                  f"{time.perf_counter() - started:5.1f}s  {summary}", flush=True)
            shutil.rmtree(tree)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
