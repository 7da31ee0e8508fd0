"""SIGTERM and SIGINT during ``cure execute`` (gVisor) leave no sandbox folder, no process and no output behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sandbox_fixtures import no_leftover_processes, rollout

pytestmark = pytest.mark.gvisor


BUSY = "while True:\n    pass\n"


def _signal_execute(tmp_path: Path, records: list[dict], workers: int, signal_sandboxes: Callable[[subprocess.Popen], None]
                    ) -> tuple[subprocess.Popen, str, Path, Path]:
    """Run ``cure execute`` on ``records`` under gVisor, wait until its sandboxes run the programs, let
    ``signal_sandboxes`` signal it, and return the process, its stderr, its TMPDIR and its output path."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    src, out = tmp_path / "rollouts.jsonl", tmp_path / "executions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "cure_cli", "execute", "--rollouts", str(src), "--out", str(out),
            "--isolation", "gvisor", "--workers", str(workers), "--no-progress"]
    with no_leftover_processes():
        # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN (no
        # KeyboardInterrupt): give the command the default disposition, as a terminal's Ctrl-C would find it.
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            # Wait until the sandboxes run the programs (their folder exists and the worker processes are up).
            while time.monotonic() < deadline and not list(tmpdir.glob("cure-sandbox-*/bundle")):
                time.sleep(0.1)
            assert list(tmpdir.glob("cure-sandbox-*")), "the sandbox pool never started"
            signal_sandboxes(proc)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc, err, tmpdir, out


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_execute_cleans_up_on_signal(tmp_path: Path, sig: int, code: int):
    def once(proc: subprocess.Popen) -> None:
        time.sleep(1)
        proc.send_signal(sig)

    proc, err, tmpdir, out = _signal_execute(tmp_path, [rollout([BUSY], [("", "1")], time_limit_s=30)], 1, once)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert not list(tmpdir.iterdir()), f"left in TMPDIR: {list(tmpdir.iterdir())}"
    assert not out.exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_more_signals_during_cleanup_do_not_cut_it_short(tmp_path: Path, sig: int, code: int):
    """Signals keep coming (every 20 ms, as an impatient user or a supervisor sends them) while the sandboxes stop:
    the cleanup still completes, nothing is left running or on disk."""
    def every_20ms(proc: subprocess.Popen) -> None:
        time.sleep(1.5)
        end = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < end:
            proc.send_signal(sig)
            time.sleep(0.02)

    records = [rollout([BUSY + f"# {i}"], [("", "1")], time_limit_s=30, task_id=f"t{i}") for i in range(2)]
    proc, err, tmpdir, out = _signal_execute(tmp_path, records, 2, every_20ms)
    assert proc.returncode in (code, -sig), err
    assert not list(tmpdir.iterdir()), f"left in TMPDIR: {list(tmpdir.iterdir())}"
    assert not out.exists()
