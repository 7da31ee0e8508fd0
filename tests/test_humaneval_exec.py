"""Every HumanEval task, converted to Stdio, passes all its tests with its canonical solution, under gVisor.

This checks the converter (:mod:`cure.humaneval`) and the executor together: 164/164 tasks, every test."""

from __future__ import annotations

import pytest
from sandbox_fixtures import no_leftover_processes

from cure.config import ExecuteConfig
from cure.execute import execute_rollouts
from cure.humaneval import load_humaneval_tasks

pytestmark = pytest.mark.gvisor


def test_canonical_solutions_pass_every_converted_test():
    tasks = load_humaneval_tasks()
    assert len(tasks) == 164
    rollouts = [
        {
            "task_id": t.task_id,
            "codes": [t.canonical_program],
            "gt_tests": [{"input": i, "output": o} for i, o in zip(t.test_input, t.test_output)],
            "tests": [],
            "time_limit_s": t.test_time_limit,
        }
        for t in tasks
    ]
    with no_leftover_processes():
        out = execute_rollouts(rollouts, ExecuteConfig(isolation="gvisor", workers=2), progress=False)
    failing = {r["task_id"]: sorted(set(r["status"][0]) - {"pass"}) for r in out if not all(r["passed"][0])}
    assert not failing, f"{len(failing)} tasks fail: {failing}"
    assert sum(len(r["status"][0]) for r in out) == sum(len(t.test_input) for t in tasks)
