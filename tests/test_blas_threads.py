"""The BLAS report (library, kernel, threads), the pinned-kernel warning, and the thread choice."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlxrnn.backend import blas, threads
from mlxrnn.backend.blas import BlasLibrary, kernel_warning, libraries_from_info

AVX512 = {"fpu", "sse2", "avx", "avx2", "fma", "avx512f"}
AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}


def openblas(architecture: str, threads: int = 2) -> BlasLibrary:
    return BlasLibrary("openblas", "0.3.31", architecture, threads, "/x/libopenblas.so")


def test_libraries_from_threadpoolctl_rows_keep_blas_only():
    rows = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.31", "architecture": "SkylakeX",
             "num_threads": 2, "filepath": "/x/libscipy_openblas.so"},
            {"user_api": "openmp", "internal_api": "openmp", "version": None, "num_threads": 2, "filepath": "/x/omp.so"}]
    (library,) = libraries_from_info(rows)
    assert library.describe() == "OpenBLAS 0.3.31, kernel SkylakeX (AVX-512), 2 threads"
    mkl = BlasLibrary("mkl", "2024.1", None, 1, "/x/libmkl_rt.so")
    assert mkl.describe() == "MKL 2024.1, 1 thread"  # MKL does not name a kernel: none is invented


def test_warning_names_the_pinning_variable():
    line = kernel_warning([openblas("Haswell")], environ={"OPENBLAS_CORETYPE": "Haswell"}, flags=AVX512)
    assert line is not None and "\n" not in line
    assert "Haswell" in line and "AVX-512" in line and "OPENBLAS_CORETYPE=Haswell" in line


def test_warning_without_a_pin_blames_the_build():
    line = kernel_warning([openblas("Sandybridge")], environ={}, flags=AVX2)
    assert line is not None and "OPENBLAS_CORETYPE" not in line and "AVX2" in line


@pytest.mark.parametrize("architecture, flags", [
    ("SkylakeX", AVX512), ("Cooperlake", AVX512), ("Haswell", AVX2), ("Zen", AVX2),  # the best kernel for the CPU
    ("SkylakeX", None),  # flags unknown (not Linux x86): nothing to compare
])
def test_no_warning_when_the_kernel_fits_or_cannot_be_told(architecture, flags):
    assert kernel_warning([openblas(architecture)], environ={"OPENBLAS_CORETYPE": architecture}, flags=flags) is None


def test_no_warning_for_libraries_that_do_not_name_their_kernel():
    assert kernel_warning([BlasLibrary("mkl", "2024", None, 2, "")], environ={}, flags=AVX512) is None
    assert kernel_warning(None, environ={}, flags=AVX512) is None  # threadpoolctl absent


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    assert blas.cpu_level(blas.cpu_flags(str(cpuinfo))) == 3
    assert blas.cpu_flags(str(tmp_path / "missing")) is None


def test_info_reports_the_kernel_and_warns_in_one_line(monkeypatch):
    from mlxrnn_cli.info import info

    monkeypatch.setattr(blas, "blas_libraries", lambda: [openblas("Haswell", threads=2)])
    monkeypatch.setattr(blas, "cpu_flags", lambda: AVX512)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    result = CliRunner().invoke(info, [])
    assert result.exit_code == 0, result.output
    assert "numpy BLAS: OpenBLAS 0.3.31, kernel Haswell (AVX2), 2 threads" in result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: OpenBLAS")]
    assert len(warnings) == 1 and "OPENBLAS_CORETYPE=Haswell" in warnings[0]
    result = CliRunner().invoke(info, ["--json"])
    assert '"blas_pinned": {\n    "OPENBLAS_CORETYPE": "Haswell"' in result.output


def test_info_without_threadpoolctl_says_it_cannot_tell(monkeypatch):
    from mlxrnn_cli.info import info

    monkeypatch.setattr(blas, "threadpoolctl_installed", lambda: False)
    result = CliRunner().invoke(info, [])
    assert result.exit_code == 0, result.output
    assert "numpy BLAS: cannot tell" in result.output


def test_bench_summary_names_the_kernel(monkeypatch):
    from mlxrnn.bench.machine import machine_info
    from mlxrnn.bench.report import format_summary

    monkeypatch.setattr(blas, "blas_libraries", lambda: [openblas("Haswell")])
    monkeypatch.setattr(blas, "cpu_flags", lambda: AVX512)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    report = {"machine": machine_info(), "sgemm_1024_gflops": 231.0, "settings": {"repeats": 1, "warmup": 0},
              "results": [], "notes": []}
    text = format_summary(report)
    assert "NumPy's BLAS: OpenBLAS 0.3.31, kernel Haswell (AVX2), 2 threads" in text
    assert "warning: OpenBLAS runs its Haswell kernel" in text


# --- threads -------------------------------------------------------------------------------------

def test_small_products_get_one_thread_and_large_ones_the_free_cores():
    sample_step = threads.recurrent_step_flops(1, 256, 4)  # batch-1 sampling: 0.5 MFLOP
    large_step = threads.recurrent_step_flops(64, 512, 4)  # 134 MFLOP
    assert threads.choose_threads(sample_step, cores=8, busy_cores=0.0, environ={}, controllable=True).blas == 1
    assert threads.choose_threads(large_step, cores=8, busy_cores=0.0, environ={}, controllable=True).blas == 8


def test_a_loaded_machine_gets_fewer_threads():
    large_step = threads.recurrent_step_flops(64, 512, 4)
    quiet = threads.choose_threads(large_step, cores=2, busy_cores=0.1, environ={}, controllable=True)
    loaded = threads.choose_threads(large_step, cores=2, busy_cores=1.8, environ={}, controllable=True)
    overloaded = threads.choose_threads(large_step, cores=2, busy_cores=5.0, environ={}, controllable=True)
    assert (quiet.blas, loaded.blas, overloaded.blas) == (2, 1, 1)
    assert "1 of 2 cores free" in loaded.describe() and "others busy on 1.8" in loaded.describe()


def test_a_users_thread_variable_is_left_alone():
    choice = threads.choose_threads(1e9, cores=2, busy_cores=0.0, environ={"OPENBLAS_NUM_THREADS": "1"})
    assert choice.blas is None and "OPENBLAS_NUM_THREADS=1" in choice.describe()
    assert threads.apply_threads(choice) is None
    missing = threads.choose_threads(1e9, environ={}, controllable=False)
    assert missing.blas is None and "threadpoolctl" in missing.reason


def test_the_choice_is_applied_and_reported(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "busy_cores_of_others", lambda window=0.2: 0.0)
    with threadpoolctl.threadpool_limits(limits=None):  # restores the caller's thread counts afterwards
        choice = threads.threads_for_recurrent_loop(batch=1, hidden=256, gates=4)
        assert choice.blas == 1
        counts = {row["num_threads"] for row in threadpoolctl.threadpool_info() if row["user_api"] == "blas"}
        assert counts == {1}
        line = choice.describe()
        kernels = ", numba kernels 1" if threads.numba_installed() else ""  # no numba: no numba threads to name
        assert line.startswith(f"threads: BLAS 1{kernels} (") and "\n" not in line


def test_the_line_names_numba_threads_only_where_numba_runs(monkeypatch):
    monkeypatch.setattr(threads, "numba_installed", lambda: False)
    assert threads.ThreadChoice(blas=2, reason="why").describe() == "threads: BLAS 2 (why)"
    monkeypatch.setattr(threads, "numba_installed", lambda: True)
    assert threads.ThreadChoice(blas=2, reason="why").describe() == "threads: BLAS 2, numba kernels 1 (why)"


def test_train_says_which_threads_it_uses(tmp_path, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from mlxrnn_cli.main import cli

    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "busy_cores_of_others", lambda window=0.2: 0.0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    with threadpoolctl.threadpool_limits(limits=None):
        result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "run"), "--steps", "1",
                                          "--hidden", "16", "--backend", "numpy", "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("threads: BLAS")]
    assert len(lines) == 1 and "MFLOP per step product" in lines[0], result.output


def test_the_governor_follows_the_load_without_sleeping(monkeypatch):
    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    now, busy, own = [0.0], [0.0], [0.0]
    applied = []
    flops = threads.recurrent_step_flops(64, 512, 4)
    start = threads.choose_threads(flops, busy_cores=0.0, controllable=True)
    governor = threads.ThreadGovernor(flops, start, interval=10.0, clock=lambda: now[0],
                                      counters=lambda: (busy[0], own[0]), apply=applied.append)
    assert start.blas == 2
    now[0], busy[0], own[0] = 5.0, 10.0, 8.0  # too soon to look again
    assert governor.tick() is None
    now[0], busy[0], own[0] = 20.0, 60.0, 30.0  # others used (60 - 30) / 20 = 1.5 cores
    changed = governor.tick()
    assert changed is not None and changed.blas == 1 and applied == [changed]
    now[0], busy[0], own[0] = 40.0, 100.0, 70.0  # ours alone: others idle again
    assert governor.tick().blas == 2 and len(applied) == 2
    now[0], busy[0], own[0] = 60.0, 140.0, 110.0
    assert governor.tick() is None  # unchanged: nothing applied


def test_eval_score_and_sample_run_batch_one_products_on_one_thread(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from mlxrnn_cli.common import inference_threads

    from mlxrnn.lm.model import LanguageModel, language_model_config
    from mlxrnn.models.sequence_model import SequenceModel
    from mlxrnn.text.tokenizers import CharTokenizer
    from mlxrnn.text.vocabulary import Vocabulary

    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    vocab = Vocabulary.build(list("abc \n"), level="char")
    lm = LanguageModel(SequenceModel(language_model_config(len(vocab), hidden_size=64, num_layers=1), backend="numpy"),
                       vocab, CharTokenizer())
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        inference_threads(lm, 1)
        assert {row["num_threads"] for row in threadpoolctl.threadpool_info() if row["user_api"] == "blas"} == {1}
