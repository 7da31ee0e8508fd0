"""Execute stage: table layout, CURE's semantics, deterministic limits, isolation modes, CLI. Under gVisor."""

from __future__ import annotations

import json
import logging

import pytest
from sandbox_fixtures import no_leftover_processes, rollout

import cure_cli as cli
from cure.config import ExecuteConfig
from cure.execute import execute_rollouts
from cure.sandbox import GVisorUnavailable, workload
from cure.sandbox.worker import needs_fresh_process
from cure.validate import ArtifactError

pytestmark = pytest.mark.gvisor

GVISOR = ExecuteConfig(isolation="gvisor", workers=2)


def test_table_layout_and_cure_semantics():
    codes = [
        "a = input()\nprint(a)",  # echo
        "import sys\nprint(sys.stdin.read().upper())\nsys.exit(3)",  # SystemExit keeps the output
        "print(input())\nraise ValueError('x')",  # an exception loses the output
        None,  # nothing extracted
        "def f(:\n  pass",  # does not compile
        "print('  ab\\n\\n  c ')",  # whitespace-normalised comparison
        "input()\ninput()",  # reading past the input: EOFError
        "a = input()\nprint(a)",  # a duplicate of row 0
    ]
    gt = [("ab c", "ab c"), ("x", "X")]
    rec = rollout(codes, gt, [None, ("y", "y"), None])
    rec["tests"][2] = {"input": 1}  # a missing and a malformed generated test
    with no_leftover_processes():
        [out] = execute_rollouts([rec], GVISOR, progress=False)
    assert out["task_id"] == "t0" and out["num_gt"] == 2
    s = out["status"]
    assert len(s) == 8 and all(len(row) == 5 for row in s)
    assert s[0] == ["pass", "fail", "no_test", "pass", "no_test"]
    assert s[1] == ["fail", "pass", "no_test", "fail", "no_test"]
    assert s[2] == ["error", "error", "no_test", "error", "no_test"]
    assert s[3] == ["no_code"] * 5
    assert s[4] == ["error", "error", "no_test", "error", "no_test"]
    assert s[5] == ["pass", "fail", "no_test", "fail", "no_test"]
    assert s[6] == ["error", "error", "no_test", "error", "no_test"]
    assert s[7] == s[0]
    assert out["passed"] == [[c == "pass" for c in row] for row in s]


def test_benchmark_workload_tables_equal_expected():
    rollouts, expected, _ = workload.make_rollouts(3, workload.KINDS_OVERHEAD, n_gt=4, n_gen=6)
    with no_leftover_processes():
        got = execute_rollouts(rollouts, GVISOR, progress=False)
    assert [r["status"] for r in got] == expected
    assert [r["task_id"] for r in got] == [r["task_id"] for r in rollouts]


def test_cpu_time_limit_is_deterministic_under_load():
    """A program needing ~0.3 s of CPU passes its 1 s limit while non-terminating programs share the cores."""
    kinds = ["heavy", "hang", "hang", "hang", "heavy", "hang"]
    rollouts, expected, _ = workload.make_rollouts(1, kinds, n_programs=6, n_gt=2, n_gen=0, heavy_s=0.3, seed=4)
    for rec in rollouts:  # every test of the hanging programs hangs
        rec["codes"] = [c.replace("while a % 4 == 3", "while True") for c in rec["codes"]]
    got = execute_rollouts(rollouts, ExecuteConfig(isolation="gvisor", workers=3), progress=False)
    statuses = got[0]["status"]
    for kind, row in zip(kinds, statuses):
        assert row == (["pass", "pass"] if kind == "heavy" else ["timeout", "timeout"]), (kind, row)


def test_state_left_by_one_test_is_not_seen_by_the_next():
    """Fresh-process semantics: a program that changes module or interpreter state sees a clean slate each test."""
    codes = [
        "import math\nprint(math.pi > 3.1)\nmath.pi = 3",  # a preloaded module
        "import colorsys\nprint(getattr(colorsys, 'x', 0))\ncolorsys.x = 1",  # a module the test imports
        "import collections\nprint(hasattr(collections, 'leak'))\nsetattr(collections, 'leak', 1)",
        "import collections\nprint(hasattr(collections.Counter, 'leak'))\ncollections.Counter.leak = 1",
        "import sys\nprint(sys.getrecursionlimit() < 5000)\nsys.setrecursionlimit(10 ** 5)",
        "import builtins\nprint(hasattr(builtins, 'zz'))\nbuiltins.zz = 1",
        "open('f', 'a').write('x')\nprint(len(open('f').read()))",  # files in the temp dir
        "import threading, time\nprint(threading.active_count())\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
    ]
    expect = ["True", "0", "False", "False", "True", "False", "1", "1"]
    recs = [rollout([c], [("", e)] * 3, task_id=f"s{i}") for i, (c, e) in enumerate(zip(codes, expect))]
    got = execute_rollouts(recs, GVISOR, progress=False)
    assert [r["status"][0] for r in got] == [["pass"] * 3] * len(codes)


def test_needs_fresh_process_is_conservative():
    assert not needs_fresh_process("a, b = map(int, input().split())\nprint(a + b)")
    assert not needs_fresh_process("import sys\nprint(sys.stdin.read())\nsys.exit(0)")
    assert needs_fresh_process("import os\nos.system('x')")
    assert needs_fresh_process("getattr(__builtins__, 'op' + 'en')('f', 'w')")
    assert needs_fresh_process("().__class__.__bases__[0].__subclasses__()")
    assert needs_fresh_process("def broken(:")
    assert needs_fresh_process("import collections\ncollections.Counter.x = 1")
    assert needs_fresh_process("from collections import Counter as C\nC.most_common = None")
    assert not needs_fresh_process("class P:\n    def __init__(self):\n        self.x = 1\np = P()\np.y = 2")


def test_isolation_none_runs_and_warns(caplog):
    rollouts, expected, _ = workload.make_rollouts(1, workload.KINDS_OVERHEAD, n_gt=2, n_gen=2)
    with caplog.at_level(logging.WARNING), no_leftover_processes():
        got = execute_rollouts(rollouts, ExecuteConfig(isolation="none", workers=1), progress=False)
    assert [r["status"] for r in got] == expected
    assert "WITHOUT A SANDBOX" in caplog.text


def test_gvisor_requested_without_runsc_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no runsc on PATH
    rec = rollout(["print(1)"], [("", "1")])
    for isolation in ("gvisor", "auto"):
        with pytest.raises(GVisorUnavailable, match="runsc"):
            execute_rollouts([rec], ExecuteConfig(isolation=isolation), progress=False)


def test_bad_rollout_record_names_the_task():
    with pytest.raises(ArtifactError, match="record 0: field 'gt_tests'"):
        execute_rollouts([{"task_id": "x", "codes": ["print(1)"], "gt_tests": "nope"}], GVISOR, progress=False)


def test_cli_execute(tmp_path, capsys):
    rollouts, expected, _ = workload.make_rollouts(2, workload.KINDS_OVERHEAD, n_programs=4, n_gt=2, n_gen=2)
    src, dst = tmp_path / "rollouts.jsonl", tmp_path / "out" / "executions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    rc = cli.main(["execute", "--rollouts", str(src), "--out", str(dst), "--isolation", "gvisor", "--workers", "2"])
    assert rc == 0
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["status"] for r in got] == expected
    assert all(set(r) >= {"task_id", "num_gt", "passed", "status"} for r in got)
    rc = cli.main(["execute", "--rollouts", str(tmp_path / "missing.jsonl"), "--out", str(dst)])
    assert rc == 2 and "missing.jsonl" in capsys.readouterr().err


def test_inside_an_outer_sandbox_a_timeout_is_rerun_once(monkeypatch):
    """``recheck_timeouts`` (a worker in a pod or sandbox container, without the host's CPU measure): a test that
    timed out runs once more, alone; its second verdict stands. The program loops on its first run only (a marker
    file shared by both runs), so it passes with the re-run and times out without it."""
    import os
    import shutil
    import tempfile
    import uuid
    from pathlib import Path

    from cure.sandbox.pool import Job, Limits, _Sandbox

    def looping_once() -> str:
        marker = os.path.join(shared, uuid.uuid4().hex)
        return (f"import os\nif not os.path.exists({marker!r}):\n    open({marker!r}, 'w').close()\n"
                "    while True:\n        pass\nprint(input())")

    shared = tempfile.mkdtemp(prefix="cure-rerun-", dir="/tmp")
    os.chmod(shared, 0o777)  # the program runs as an unprivileged user
    workdir = tempfile.mkdtemp(prefix="cure-rerun-work-", dir="/tmp")  # its working folder is under this one:
    os.chmod(workdir, 0o711)  # pytest's tmp_path sits in folders only root may enter
    sandbox = _Sandbox("none", Path(workdir), 0)  # the worker itself is started without CURE_SANDBOX_OUTER
    try:
        monkeypatch.setenv("CURE_SANDBOX_OUTER", "test")  # what pool.run reads
        assert sandbox.run(Job(looping_once(), [("7", "7")], time_limit=0.3), Limits(wall_factor=2.0)) == ["pass"]
        monkeypatch.delenv("CURE_SANDBOX_OUTER")
        assert sandbox.run(Job(looping_once(), [("7", "7")], time_limit=0.3), Limits(wall_factor=2.0)) == ["timeout"]
        # a program that always loops still times out with the re-run
        monkeypatch.setenv("CURE_SANDBOX_OUTER", "test")
        assert sandbox.run(Job("while True:\n    pass", [("7", "7")], time_limit=0.3), Limits(wall_factor=2.0)) == ["timeout"]
    finally:
        sandbox.close()
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def test_inside_an_outer_sandbox_each_worker_gives_its_programs_its_own_uid(monkeypatch):
    """Worker k of a pool inside an outer sandbox runs programs as 65534 - k, so that its cleanup by uid
    (worker._kill_leftovers) never reaches a program of another worker (which would read as a timeout)."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from cure.sandbox.pool import Job, Limits, _Sandbox, program_uid

    assert [program_uid(k) for k in range(3)] == [65534, 65533, 65532]
    workdir = tempfile.mkdtemp(prefix="cure-uid-work-", dir="/tmp")
    os.chmod(workdir, 0o711)
    monkeypatch.setenv("CURE_SANDBOX_OUTER", "test")
    sandbox = _Sandbox("none", Path(workdir), 1)  # index 1: uid 65533, which nothing else on this machine uses
    try:
        job = Job("import os\nprint(os.getuid(), os.getgid())", [("", "65533 65533")], time_limit=1.0)
        assert sandbox.run(job, Limits()) == ["pass"]
    finally:
        sandbox.close()
        shutil.rmtree(workdir, ignore_errors=True)
