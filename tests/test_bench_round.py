"""bench/bench_round.py: the timing probe a task process carries, and how a task's wall time is split into phases.
Speed itself is never asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_round", ROOT / "bench" / "bench_round.py")
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)


def test_phases_add_up_to_the_wall_time_and_imports_are_not_counted_twice() -> None:
    t = 1000.0
    events = [
        {"ev": "start", "t": t + 0.05},
        {"ev": "import", "name": "kfp.dsl", "t0": t + 0.06, "t1": t + 0.16},
        {"ev": "import", "name": "torch", "t0": t + 0.3, "t1": t + 2.3},
        {"ev": "model_load", "t0": t + 2.5, "t1": t + 4.0, "imports": 1.0},  # 1 s of its 1.5 s importing
        {"ev": "import", "name": "transformers.models.auto", "t0": t + 2.6, "t1": t + 3.6},
        {"ev": "work", "t0": t + 4.0, "t1": t + 9.0, "imports": 0.0},
        {"ev": "save", "t0": t + 9.0, "t1": t + 9.5, "imports": 0.0},
        {"ev": "body", "t0": t + 0.2, "t1": t + 9.6, "imports": 3.0},
    ]
    p = br.split_phases(events, t_spawn=t, t_end=t + 10.0)
    assert p["wall"] == pytest.approx(10.0)
    assert p["start"] == pytest.approx(0.05) and p["exit"] == pytest.approx(0.4)
    assert p["imports"] == pytest.approx(3.1) and p["model_load"] == pytest.approx(0.5)
    assert p["work"] == pytest.approx(5.0) and p["save"] == pytest.approx(0.5)
    assert sum(p[k] for k in br.PHASES) == pytest.approx(p["wall"])
    assert p["overhead"] == pytest.approx(5.0)


def test_round_sum_gives_the_overhead_share() -> None:
    tasks = {"a": {"wall": 10.0, "work": 6.0, "overhead": 4.0}, "b": {"wall": 2.0, "work": 0.0, "overhead": 2.0}}
    total = br.round_sum(tasks)
    assert total["wall"] == 12.0 and total["overhead_share"] == pytest.approx(0.5)


def test_the_probe_times_imports_and_wrapped_calls_of_a_real_process(tmp_path: Path) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    (src / "f.txt").write_text("x")
    log = tmp_path / "task.log"
    code = f"import cure.stages; cure.stages._copy_model({str(src)!r}, {str(dst)!r})"
    t0 = time.time()
    phases = br.run_task([sys.executable, "-c", code], ROOT, log)
    assert (dst / "f.txt").read_text() == "x"
    events = [json.loads(line) for line in log.with_suffix(".trace").read_text().splitlines()]
    assert events[0]["ev"] == "start" and t0 <= events[0]["t"]
    assert "cure.stages" in {e.get("name") for e in events if e["ev"] == "import"}
    copies = [e for e in events if e["ev"] == "copy"]
    assert len(copies) == 1 and copies[0]["t0"] <= copies[0]["t1"]
    assert phases["copy"] > 0 and phases["imports"] > 0 and phases["work"] == 0
    assert phases["overhead"] == pytest.approx(phases["wall"])


def test_the_probe_does_nothing_without_its_variable() -> None:
    env = {**os.environ, "PYTHONPATH": str(br.TRACE_DIR)}
    env.pop("CURE_ROUND_TRACE", None)
    out = subprocess.run([sys.executable, "-c", "import sitecustomize, importlib._bootstrap as b; "
                          "print(sitecustomize._out is None, b._find_and_load.__module__)"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and out[1] != "sitecustomize"  # nothing patched


def test_a_failing_task_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exit 3"):
        br.run_task([sys.executable, "-c", "raise SystemExit(3)"], ROOT, tmp_path / "t.log")
