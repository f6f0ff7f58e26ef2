"""The benchmark report as people read it: a table of tokens/s and ratios, and a summary.

Rows are sorted by task, cell and size, implementations in the order they were measured;
``graph nodes/step`` (MLX implementations, training rows) is the number of primitives one
training step evaluates, where a compiled function's fused kernel counts once.
"""

from __future__ import annotations

from mlxrnn.bench.sizes import TASKS


def format_rate(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"


def format_table(report: dict, markdown: bool = False) -> str:
    """The report as a table: tokens/s (median, min–max) and the ratio to the baseline."""
    baseline = report["settings"].get("baseline")
    header = ["task", "cell", "size", "implementation", "tokens/s (median)", "min–max",
              f"× {baseline}" if baseline else "ratio", "ratio min–max", "peak RSS MB", "GEMM share of peak",
              "graph nodes/step"]
    lines = []
    order = {task: i for i, task in enumerate(TASKS)}
    impls = {impl: i for i, impl in enumerate(dict.fromkeys(r["impl"] for r in report["results"]))}
    sizes = {size: i for i, size in enumerate(dict.fromkeys(r["size"] for r in report["results"]))}
    for row in sorted(report["results"],
                      key=lambda r: (order[r["task"]], r["cell"], sizes[r["size"]], impls[r["impl"]])):
        lines.append([
            row["task"], row["cell"], row["size"], row["impl"], format_rate(row["tokens_per_s"]),
            f"{format_rate(row['tokens_per_s_min'])}–{format_rate(row['tokens_per_s_max'])}",
            f"{row['ratio']:.2f}" if "ratio" in row else "",
            f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}" if "ratio" in row else "",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['fraction_of_sgemm_peak']:.0%}" if "fraction_of_sgemm_peak" in row else "",
            f"{row['graph_nodes']:,}" if row.get("graph_nodes") else "",
        ])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(cells[i]) for cells in lines)) if lines else len(h) for i, h in enumerate(header)]

    def render(cells: list[str]) -> str:  # text columns left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(cells) for cells in lines])


def format_summary(report: dict) -> str:
    """Machine line, yardstick and notes, printed under the table."""
    m = report["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("mlxrnn", "numpy", "mlx", "torch", "numba") if m.get(k))
    lines = [f"{m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}; {versions}"]
    if m.get("blas"):
        lines.append("NumPy's BLAS: " + "; ".join(m["blas"]))
    elif "blas" in m:
        lines.append("NumPy's BLAS: kernel and threads unknown (threadpoolctl is not installed)")
    if m.get("blas_warning"):
        lines.append(m["blas_warning"])
    if m.get("numpy_kernels"):
        lines.append(f"point-wise kernels of the numpy rows: {m['numpy_kernels']}")
    if m.get("mlx_device"):
        lines.append(f"MLX device: {m['mlx_device']}")
    lines.append(f"NumPy float32 1024² matmul (the peak yardstick): {report['sgemm_1024_gflops']:.0f} GFLOP/s; "
                 f"repeats {report['settings']['repeats']}, warm-up {report['settings']['warmup']}")
    background = [r["background_cpu"] for r in report["results"] if "background_cpu" in r]
    if background and max(background) > 0.1:
        lines.append(f"warning: other processes used up to {max(background):.0%} of the CPUs during the runs "
                     "(see background_cpu in --json): the timings are unreliable, run again on a quiet machine")
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)
