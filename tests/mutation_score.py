"""A mutation score for the run machinery: generated one-token mutants, each run against the test
files of the module it breaks; the share killed per module.

    nice -n 19 python tests/mutation_score.py --sample 45 --seed 29 --jobs 2 --out /tmp/mutants.jsonl
    python tests/mutation_score.py --list mlxrnn/training/fit.py        # the mutants, not run

Not part of the suite (pytest does not collect this file; a full run takes tens of minutes).
Where tests/mutations.py plants hand-written bugs, this generates them, as mutation tools do:

* a comparison flipped at its boundary or negated (``<`` ↔ ``<=``, ``==`` ↔ ``!=``, ``in`` ↔ ``not in``,
  ``is`` ↔ ``is not``), ``and`` ↔ ``or``, a ``not`` or a unary minus dropped;
* arithmetic swapped (``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``//``, ``**`` → ``*``),
  also in augmented assignments;
* a number changed by one, ``True`` ↔ ``False``; ``break`` ↔ ``continue``;
* a statement that is a call deleted (``pass``), a returned value replaced by ``None``.

Strings (messages), f-strings, docstrings and annotations are left alone. Each mutant is the
module's source with one change, written with ``ast.unparse`` into a private copy of the working
tree (tests/mutations.py's ``copy_tree``), never this one; pytest runs there with ``-x`` on the
module's test files, most specific first. Killed: pytest exit 1 (a test failed) or a timeout
(3x the unmutated run plus 30 s); survived: exit 0; anything else is an error, reported apart.
With ``--sample N`` at most N mutants per module are drawn uniformly with ``--seed``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.mutations import ROOT, copy_tree, imports_from  # noqa: E402

#: module -> its test files, the most specific (and fastest to fail) first
MODULES: dict[str, tuple[str, ...]] = {
    "mlxrnn/run/loop.py": (
        "tests/test_compiled_runs.py", "tests/test_loop.py", "tests/test_run_state.py", "tests/test_reliability_runs.py",
        "tests/test_compiled.py::test_resume_on_the_compiled_path_is_bit_exact",
        "tests/test_compiled.py::test_a_run_reads_each_step_only_after_queueing_the_next",
        "tests/test_compiled.py::test_divergence_on_the_compiled_path_names_the_step_and_keeps_good_weights",
        "tests/test_reliability_signals.py::test_divergence_before_any_checkpoint_says_so_and_suggests_clipping",
        "tests/test_reliability_signals.py::test_divergence_keeps_the_last_good_checkpoint",
        "tests/test_reliability_signals.py::test_gradient_norms_and_clip_rate_are_logged",
        "tests/test_reliability_signals.py::test_ctrl_c_during_the_final_evaluation_saves_and_exits_cleanly",
    ),
    "mlxrnn/run/resume.py": ("tests/test_resume_bounds.py", "tests/test_resume_meta.py",
                             "tests/test_reliability_resume.py", "tests/test_continuing.py"),
    "mlxrnn/io/run_directory.py": (
        "tests/test_run_directory_lock.py", "tests/test_run_directory.py", "tests/test_reliability_runs.py",
        "tests/test_reliability_signals.py::test_force_never_deletes_what_is_not_a_runs",
        "tests/test_reliability_signals.py::test_a_failed_forced_run_keeps_the_old_run",
        "tests/test_reliability_signals.py::test_no_path_the_user_passes_is_overwritten",
    ),
    "mlxrnn/training/compiled.py": ("tests/test_compiled_cache.py", "tests/test_compiled_step.py",
                                    "tests/test_compiled.py"),
    "mlxrnn/training/fit.py": ("tests/test_fit_callbacks.py", "tests/test_fit.py"),
    "mlxrnn/training/callbacks.py": ("tests/test_fit_callbacks.py", "tests/test_fit.py"),
}

_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  #: position among the module's mutants (stable while the module does not change)
    line: int
    kind: str
    before: str
    after: str


def _skipped(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: annotations, f-strings, docstrings and what they hold."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots += [node.returns] + [a.annotation for a in
                                       node.args.args + node.args.kwonlyargs + node.args.posonlyargs]
            roots += [a.annotation for a in (node.args.vararg, node.args.kwarg) if a is not None]
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            roots.append(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                roots.append(first)
    return {id(sub) for root in roots if root is not None for sub in ast.walk(root)}


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _sites(tree: ast.AST) -> list[tuple[ast.AST, str, object]]:
    """Every (node, kind, detail) a mutant can change, in a fixed order."""
    skipped, sites = _skipped(tree), []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Compare):
            sites += [(node, "compare", i) for i, op in enumerate(node.ops) if type(op) in _COMPARE]
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            if not (_is_text(node.left) or _is_text(node.right)):
                sites.append((node, "arith", None))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _ARITH:
            sites.append((node, "augassign", None))
        elif isinstance(node, ast.BoolOp):
            sites.append((node, "boolop", None))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            sites.append((node, "unary", None))
        elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
            sites.append((node, "constant", None))
        elif isinstance(node, (ast.Break, ast.Continue)):
            sites.append((node, "loop", None))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            sites.append((node, "delete-call", None))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            sites.append((node, "return-none", None))
    return sites


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, new: ast.AST):
        self.target, self.new = target, new

    def visit(self, node):
        if node is self.target:
            return self.new
        return self.generic_visit(node)


def _apply(tree: ast.AST, node: ast.AST, kind: str, detail: object) -> tuple[ast.AST, ast.AST]:
    """Mutate ``node`` (in place or by replacement); returns (tree, the node now in its place)."""
    if kind == "compare":
        node.ops[detail] = _COMPARE[type(node.ops[detail])]()
        return tree, node
    if kind in ("arith", "augassign"):
        node.op = _ARITH[type(node.op)]()
        return tree, node
    if kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return tree, node
    if kind == "constant":
        value = node.value
        node.value = (not value) if isinstance(value, bool) else value + 1
        return tree, node
    new = {"unary": lambda: node.operand, "loop": lambda: ast.Continue() if isinstance(node, ast.Break) else ast.Break(),
           "delete-call": lambda: ast.Pass(),
           "return-none": lambda: ast.Return(value=ast.Constant(value=None))}[kind]()
    ast.copy_location(new, node)
    return _Replace(node, new).visit(tree), new


def mutants(module: str) -> list[tuple[Mutant, str]]:
    """Every mutant of ``module`` (a path relative to the repository) with its full source."""
    source = (ROOT / module).read_text(encoding="utf-8")
    count = len(_sites(ast.parse(source)))
    found = []
    for index in range(count):
        tree = ast.parse(source)
        node, kind, detail = _sites(tree)[index]
        before = ast.unparse(node)
        tree, new = _apply(tree, node, kind, detail)
        found.append((Mutant(module, index, node.lineno, kind, before, ast.unparse(new)), ast.unparse(tree)))
    return found


def _run(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1")
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - started, ""
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    failed = next((line.split(" - ")[0].removeprefix("FAILED ") for line in lines if line.startswith("FAILED ")), "")
    verdict = {0: "survived", 1: "killed"}.get(proc.returncode, f"error {proc.returncode}")
    return verdict, time.perf_counter() - started, failed or (lines[-1] if lines else proc.stderr[-200:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all of MODULES)")
    parser.add_argument("--sample", type=int, default=0, help="at most this many mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="list the (sampled) mutants and exit")
    parser.add_argument("--only", default="", help="comma-separated module:index mutants to run")
    parser.add_argument("--out", default="", help="append one JSON line per mutant here")
    options = parser.parse_args(argv)
    modules = options.modules or list(MODULES)
    chosen: list[tuple[Mutant, str]] = []
    for module in modules:
        found = mutants(module)
        if options.sample and len(found) > options.sample:
            picked = sorted(random.Random(f"{options.seed}:{module}").sample(range(len(found)), options.sample))
            found = [found[i] for i in picked]
        print(f"{module}: {len(mutants(module))} mutants, running {len(found)}", flush=True)
        chosen += found
    if options.only:
        wanted = {tuple(item.rsplit(":", 1)) for item in options.only.split(",")}
        chosen = [(m, s) for m, s in chosen if (m.module, str(m.index)) in wanted]
    if options.list:
        for m, _ in chosen:
            print(f"{m.module}:{m.index} line {m.line} {m.kind}: {m.before!r} -> {m.after!r}")
        return 0
    tests = {module: tuple(t for t in MODULES[module] if (ROOT / t.split("::")[0]).exists()) for module in modules}
    with tempfile.TemporaryDirectory(prefix="mlxrnn-mutation-score-") as scratch:
        trees = []
        for job in range(options.jobs):
            tree = Path(scratch) / f"tree-{job}"
            copy_tree(tree)
            trees.append(tree)
        if not imports_from(trees[0]):
            print("error: the copy's mlxrnn is not the one imported there; check PYTHONPATH", file=sys.stderr)
            return 2
        limits = {}
        for module in modules:  # the unmutated module, as ast.unparse writes it, must pass its tests
            original = (ROOT / module).read_text(encoding="utf-8")
            (trees[0] / module).write_text(ast.unparse(ast.parse(original)), encoding="utf-8")
            verdict, seconds, detail = _run(trees[0], tests[module], timeout=1800)
            (trees[0] / module).write_text(original, encoding="utf-8")
            print(f"baseline {module}: {verdict} in {seconds:.0f}s {detail}", flush=True)
            if verdict != "survived":
                return 2
            limits[module] = 3 * seconds + 30
        free, lock, results = list(trees), threading.Lock(), []

        def one(item: tuple[Mutant, str]) -> None:
            mutant, source = item
            with lock:
                tree = free.pop()
            path = tree / mutant.module
            original = path.read_text(encoding="utf-8")
            try:
                path.write_text(source, encoding="utf-8")
                verdict, seconds, detail = _run(tree, tests[mutant.module], limits[mutant.module])
            finally:
                path.write_text(original, encoding="utf-8")
                with lock:
                    free.append(tree)
            row = {**asdict(mutant), "verdict": verdict, "seconds": round(seconds, 1), "detail": detail}
            with lock:
                results.append(row)
                print(f"{verdict:9} {mutant.module}:{mutant.index} line {mutant.line} {mutant.kind}: "
                      f"{mutant.before!r} -> {mutant.after!r}  ({seconds:.0f}s) {detail}", flush=True)
                if options.out:
                    with open(options.out, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")

        with ThreadPoolExecutor(options.jobs) as pool:
            list(pool.map(one, chosen))
    print("\n| module | mutants | run | killed | survived | errors | score |\n|---|---|---|---|---|---|---|")
    for module in modules:
        rows = [r for r in results if r["module"] == module]
        killed = sum(r["verdict"] in ("killed", "timeout") for r in rows)
        survived = sum(r["verdict"] == "survived" for r in rows)
        scored = killed + survived
        print(f"| {module} | {len(mutants(module))} | {len(rows)} | {killed} | {survived} | "
              f"{len(rows) - scored} | {100 * killed / max(scored, 1):.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
