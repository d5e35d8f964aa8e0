"""`exit_now`: a finished process ends without module teardown, but nothing it owed is lost."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_exit_now_joins_threads_runs_exit_handlers_flushes_and_keeps_the_code(tmp_path):
    marker = tmp_path / "handler-ran"
    thread_out = tmp_path / "thread-done"
    script = textwrap.dedent(f"""
        import atexit, sys, threading, time
        from convopt_mlflow.fast_exit import exit_now

        def slow():
            time.sleep(0.3)
            open({str(thread_out)!r}, "w").write("done")

        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        threading.Thread(target=slow).start()
        sys.stdout.write("buffered, no newline")
        sys.stderr.write("to stderr")
        exit_now(3)
        print("never")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "buffered, no newline" and proc.stderr == "to stderr"
    assert marker.read_text() == "ran" and thread_out.read_text() == "done"


def test_exit_now_does_not_wait_for_idle_executor_threads():
    """concurrent.futures' worker threads are non-daemon and wait for work until the threading
    module's exit hooks stop them (MLflow's async logging and the A/B module keep executors)."""
    script = ("from concurrent.futures import ThreadPoolExecutor\n"
              "from convopt_mlflow.fast_exit import exit_now\n"
              "pool = ThreadPoolExecutor(2)\nassert pool.submit(lambda: 7).result() == 7\nexit_now(5)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr


def test_the_program_returns_mains_exit_code(tmp_path):
    """`python -m convopt_mlflow.cli` (what the MLproject and the console script run) ends through
    `run`: bad input still exits 2 with its one message."""
    proc = subprocess.run([sys.executable, "-m", "convopt_mlflow.cli", "data", "check", str(tmp_path / "none.csv")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("convopt: error:") and "Traceback" not in proc.stderr


def test_a_profiled_program_still_writes_its_profile(tmp_path):
    out = tmp_path / "prof.out"
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "convopt_mlflow.cli", "config",
                           "show", "--preset", "baseline"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
