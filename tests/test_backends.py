"""Where programs run is decided in one place (cure.backends): every stage asks it, none reads execute.backend."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cure import backends
from cure.agentic.live import LivePorts
from cure.config import CureConfig
from cure.prompts import PromptTemplates
from cure.refine import probe
from cure.sandbox.pool import SandboxPool

SRC = Path(backends.__file__).resolve().parent


def config(backend: str) -> CureConfig:
    cfg = CureConfig()
    cfg.execute.backend = backend
    return cfg


@pytest.mark.parametrize(("backend", "in_pod", "chosen"), [
    ("auto", False, backends.LocalBackend), ("auto", True, backends.KubernetesBackend),
    ("local", True, backends.LocalBackend), ("container", False, backends.ContainerBackend),
    ("kubernetes", False, backends.KubernetesBackend),
])
def test_the_backend_follows_the_config_and_auto_follows_the_pod(monkeypatch, backend, in_pod, chosen):
    if in_pod:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    got = backends.execution_backend(config(backend))
    assert type(got) is chosen and got.name == backends.backend_name(config(backend))


def test_only_the_backends_module_reads_execute_backend():
    """No stage decides for itself: ``<x>.execute.backend`` is read in cure/backends.py alone."""
    readers = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "backend" and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "execute" and path.name != "backends.py":
                readers.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert readers == []


def test_pools_for_program_output_are_local_and_the_cluster_has_none():
    for name in ("local", "container"):
        pool = backends.execution_backend(config(name)).pool()
        assert isinstance(pool, SandboxPool)  # not entered: no sandbox starts
    cluster = backends.execution_backend(config("kubernetes"))
    assert not cluster.prints_output
    with pytest.raises(ValueError, match="execute.backend=local"):
        cluster.pool()


def test_refinement_probe_on_a_status_only_backend_gets_statuses_through_it(monkeypatch):
    """The probe asks the backend what it can do: on the cluster it runs the generated tests through the backend's
    execute (no ground-truth columns) and gets statuses without outputs."""
    seen = []

    def execute(self, rollouts):
        seen.extend(rollouts)
        return [{"task_id": r["task_id"], "status": [["pass", "fail"]]} for r in rollouts]

    monkeypatch.setattr(backends.KubernetesBackend, "execute", execute)
    rollout = {"task_id": "t", "codes": ["print(1)"], "tests": [{"input": "", "output": "1"}, {"input": "", "output": "2"}],
               "gt_tests": [{"input": "", "output": "1"}], "time_limit_s": 1.0}
    (status, outputs), = probe([rollout], config("kubernetes"))
    assert status == [["pass", "fail"]] and outputs == [[None, None]]
    assert [r["gt_tests"] for r in seen] == [[]]


def test_the_agentic_frameworks_refuse_a_backend_without_program_output():
    with pytest.raises(ValueError, match="execute.backend=local"):
        LivePorts(None, None, config("kubernetes"), None, PromptTemplates.load(None))
