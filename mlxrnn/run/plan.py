"""What a run is about to do, said before its first step: the start-up line and the warnings.

A new user who forgets ``--tokenizer`` trains a character model on a word corpus, and one who
sets ``--seq-len 5000`` trains one step per epoch, without a word from the run. So every run
(new or resumed) first says what it will train and how, in one line that is also kept in its
"start" record, and warns in one line each about settings that make its result weak: a budget
of a handful of steps, no evaluation before the end, one window per epoch.
"""

from __future__ import annotations

import os
from typing import Any

#: fewer steps than this in a budget is "a handful": the loss has barely moved
HANDFUL_OF_STEPS = 10
#: the thread-count variables BLAS libraries read, in the order they take precedence
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def blas_threads() -> int | None:
    """The threads NumPy's BLAS uses: asked of the library when threadpoolctl is installed,
    else read from the variables that set it; None when neither says."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
        if counts:
            return int(counts[0])
    for name in _THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def kernels_in_use(xp: Any, compiled: bool) -> str:
    """The NumPy backend's point-wise kernels ("numba" or "numpy"), or MLX's step ("compiled"/"eager")."""
    if hasattr(xp, "kernel_choice"):
        xp.kernels  # noqa: B018 - chooses them now (otherwise at the first step), so the line can say which
        return xp.kernel_choice.name
    return "compiled" if compiled else "eager"


def run_plan(options: Any, lm: Any, per_epoch: int, total_steps: int | None, step: int, compiled: bool,
             processes: int = 1) -> dict[str, Any]:
    """The facts of the start-up line, JSON-ready, with the line itself under "line"."""
    plan = {
        "level": lm.level,
        "tokenizer": lm.tokenizer.kind,
        "vocab_size": len(lm.vocab),
        "parameters": int(lm.model.num_parameters()),
        "steps_per_epoch": per_epoch,
        "steps": total_steps,
        "minutes": options.stopping()["minutes"],
        "from_step": step,
        "eval_every": options.eval_every,  # a count, or "epoch"
        "eval_interval": options.eval_interval(per_epoch),
        "backend": lm.xp.name,
        "kernels": kernels_in_use(lm.xp, compiled),
        "blas_threads": blas_threads(),
        "processes": processes,
    }
    plan["line"] = plan_line(plan)
    return plan


def plan_line(plan: dict[str, Any]) -> str:
    """"training a word-level model (whitespace tokenizer, vocabulary 10,000, 4.6M parameters): ..."."""
    budget = []
    if plan["steps"] is not None:
        left = f", {plan['steps'] - plan['from_step']} to go" if plan["from_step"] else ""
        budget.append(f"{plan['steps']} steps in the budget{left}")
    if plan["minutes"] is not None:
        budget.append(f"at most {plan['minutes']:g} minute{'s' * (plan['minutes'] != 1)}")
    threads = plan["blas_threads"]
    threads = "BLAS threads: library default" if threads is None else f"{threads} BLAS thread{'s' * (threads != 1)}"
    processes = f", {plan['processes']} processes" if plan["processes"] > 1 else ""
    every = ("at each epoch's end" if plan["eval_every"] == "epoch" else f"every {plan['eval_interval']:,} steps")
    return (
        f"training a {plan['level']}-level model ({plan['tokenizer']} tokenizer, vocabulary {plan['vocab_size']:,}, "
        f"{plan['parameters']:,} parameters): {plan['steps_per_epoch']:,} steps per epoch, {' and '.join(budget)}; "
        f"evaluating {every} and at the end; {plan['backend']} backend, "
        f"{plan['kernels']} kernels, {threads}{processes}"
    )


def plan_warnings(options: Any, plan: dict[str, Any], streams: int) -> list[str]:
    """One line per weak setting (settings named in backquotes, shown as flags by the CLI)."""
    warnings = []
    total, start = plan["steps"], plan["from_step"]
    if total is not None and total - start < HANDFUL_OF_STEPS:
        warnings.append(f"warning: this session trains {total - start} steps ({start} to {total}), too few to learn "
                        f"much; raise `steps` or `epochs`" if start else
                        f"warning: the budget is {total} steps, too few to learn much; raise `steps` or `epochs`")
    interval = plan["eval_interval"]
    if total is not None and (start // interval + 1) * interval >= total:
        warnings.append(f"warning: `eval_every` {options.eval_every} with {total} steps: no evaluation before the "
                        "end (validation and the best checkpoint only when training stops); lower `eval_every`")
    if plan["steps_per_epoch"] == 1:
        warnings.append(f"warning: `seq_len` {options.seq_len} leaves one window per epoch for {streams} streams "
                        "(`batch_size`): each epoch is a single step; lower `seq_len` or `batch_size`")
    return warnings
