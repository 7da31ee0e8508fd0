"""Runtime guards of the execute stage, whatever the config loader let through: wall-clock factors that would hang
or overflow are refused before any sandbox starts, and the pool never starts more sandboxes than jobs or cores."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from sandbox_fixtures import rollout

from cure import execute
from cure.sandbox import pool as pool_mod
from cure.sandbox.pool import Limits, SandboxPool, pool_size


@pytest.mark.parametrize("factor", [1e6, float("inf"), float("nan"), 0.5, -1.0])
def test_wall_factor_out_of_bounds_is_refused_before_any_sandbox_starts(factor, monkeypatch):
    started = []
    monkeypatch.setattr(execute, "SandboxPool", lambda *a, **k: started.append(1))
    cfg = SimpleNamespace(isolation="none", workers=1, memory_mb=256, output_limit_bytes=1 << 16, wall_factor=factor)
    with pytest.raises(ValueError, match="wall_factor"):
        execute.execute_rollouts([rollout(["print(1)"], [("", "1")])], cfg, progress=False)
    assert not started


def test_limits_refuse_non_positive_sizes():
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=0)
    with pytest.raises(ValueError, match="output_limit"):
        Limits(output_limit=-5)
    assert Limits(wall_factor=100).wall(2.0) == 201.0


def test_pool_size_is_capped_by_jobs_and_cores():
    cores = os.cpu_count() or 1
    assert pool_size(1000, jobs=5) == min(5, cores)
    assert pool_size(1000) == cores
    assert pool_size(0, jobs=1) == 1
    assert pool_size(0) == cores
    with pytest.raises(ValueError, match="workers"):
        pool_size(-1)


def test_execute_asks_for_no_more_sandboxes_than_jobs(monkeypatch):
    seen = []

    class Spy(SandboxPool):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self.workers)

    monkeypatch.setattr(execute, "SandboxPool", Spy)
    monkeypatch.setattr(pool_mod.log, "warning", lambda *a, **k: None)
    cfg = SimpleNamespace(isolation="none", workers=1000, memory_mb=256, output_limit_bytes=1 << 16, wall_factor=3.0)
    [out] = execute.execute_rollouts([rollout(["print(1)"], [("", "1")])], cfg, progress=False)
    assert out["status"] == [["pass"]]
    assert seen == [1]
