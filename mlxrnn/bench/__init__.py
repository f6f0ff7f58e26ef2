"""The measurement harness behind ``mlxrnn bench`` and ``benchmarks/``.

    sizes      cells, tasks, shapes and their analytic GEMM work
    workloads  mlxrnn's own implementations (numpy, mlx, mlx-compiled, mlx-autodiff...)
    peers      PyTorch and mlx.nn, the same network
    harness    settings, fresh-process workers, machine facts, the report
    report     the table and summary people read
"""


def __getattr__(name: str):  # the names this module had in mlxrnn 0.1.0, with a DeprecationWarning
    from mlxrnn._moved import moved_name

    return moved_name(__name__, name)
