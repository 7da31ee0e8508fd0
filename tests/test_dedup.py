"""A program runs once per distinct test input: columns that share an input share the run, tables are exactly what
running every cell gives, and the execution records count executions requested and run. Under gVisor."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from sandbox_fixtures import no_leftover_processes, rollout

from cure.config import ExecuteConfig
from cure.execute import execute_rollouts, summarize_executions
from cure.sandbox import workload
from cure.sandbox.pool import Job, Limits, _Sandbox

pytestmark = pytest.mark.gvisor

GVISOR = ExecuteConfig(isolation="gvisor", workers=2)


def test_shared_inputs_give_the_expected_tables_and_are_counted():
    kinds = workload.KINDS_OVERHEAD + ["hang"]
    rollouts, expected, _ = workload.make_rollouts(3, kinds, n_programs=9, n_gt=4, n_gen=8, distinct_inputs=3, seed=2)
    rollouts[0]["codes"][1] = rollouts[0]["codes"][0]  # an identical program too: its row is copied
    expected[0][1] = expected[0][0]
    with no_leftover_processes():
        got = execute_rollouts(rollouts, GVISOR, progress=False)
    assert [r["status"] for r in got] == expected  # cell by cell, timeouts of the hanging program included
    assert got[0]["executions"] == {"requested": 9 * 12, "run": 8 * 3}
    assert got[1]["executions"] == {"requested": 9 * 12, "run": 9 * 3}
    assert summarize_executions(got) == {"executions_requested": 3 * 108, "executions_run": 24 + 2 * 27}


def test_a_column_without_a_test_or_a_row_without_a_program_is_not_requested():
    rec = rollout(["print(input())", None], [("a", "a"), ("a", "b")], [None, ("a", "a")])
    [out] = execute_rollouts([rec], GVISOR, progress=False)
    assert out["status"] == [["pass", "fail", "no_test", "pass"], ["no_code"] * 4]
    assert out["executions"] == {"requested": 3, "run": 1}


def test_tests_sharing_an_input_share_one_run():
    """The program counts its runs in a file of a shared folder (isolation none): one run for three tests."""
    shared = tempfile.mkdtemp(prefix="cure-dedup-", dir="/tmp")
    os.chmod(shared, 0o777)  # the program runs as an unprivileged user
    workdir = tempfile.mkdtemp(prefix="cure-dedup-work-", dir="/tmp")
    os.chmod(workdir, 0o711)
    counter = os.path.join(shared, uuid.uuid4().hex)
    code = f"open({counter!r}, 'a').write('x')\nprint(input())"
    sandbox = _Sandbox("none", Path(workdir), 0)
    try:
        job = Job(code, [("7", "7"), ("8", "8"), ("7", "8"), ("7", " 7\n")], want_output=True)
        assert sandbox.run(job, Limits()) == ["pass", "pass", "fail", "pass"]
        assert job.runs == 2 and job.outputs == ["7\n", "8\n", "7\n", "7\n"]
        assert Path(counter).read_text() == "xx"
    finally:
        sandbox.close()
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
