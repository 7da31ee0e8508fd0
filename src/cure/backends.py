"""Where programs run: one execution-backend interface, chosen in one place (:func:`execution_backend`).

Every stage that runs model-written programs (execute, evaluate, refinement, pairing, the agentic frameworks) asks
this module for a backend and calls it; none of them looks at ``execute.backend`` itself. Three backends:

* ``local``: :class:`cure.sandbox.pool.SandboxPool` on this machine (``runsc`` around long-lived workers,
  ``execute.isolation``);
* ``container``: containers of the sandbox image under runsc on a local container engine, set up as the cluster
  Job's pods (:mod:`cure.sandbox.container`; ``cure run --runner docker``);
* ``kubernetes``: an Indexed Job of gVisor pods launched from inside a pod (:mod:`cure.sandbox.k8s`), inputs and
  results through the store.

``auto`` (the default) is ``kubernetes`` inside a pod and ``local`` elsewhere.

Two operations: :meth:`Backend.execute` turns rollout records into execution records (the execution artifact's
contract, docs/architecture.md), and :meth:`Backend.pool` opens a pool that also returns what each program printed
(refinement's probe and the agentic frameworks need it). The container backend's pool is the local pool; the
Kubernetes Job returns statuses only, so it has no pool (:attr:`Backend.prints_output` is False).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

from cure.config import CureConfig
from cure.execute import execute_rollouts, sandbox_pool
from cure.sandbox.container import run_shards
from cure.sandbox.k8s import run_on_cluster, settings_from_config
from cure.sandbox.pool import SandboxPool
from cure.store import open_store

BackendName = Literal["local", "container", "kubernetes"]


def backend_name(cfg: CureConfig) -> BackendName:
    """``execute.backend``, with ``auto`` resolved: ``kubernetes`` inside a pod, ``local`` elsewhere."""
    if cfg.execute.backend != "auto":
        return cfg.execute.backend
    return "kubernetes" if os.environ.get("KUBERNETES_SERVICE_HOST") else "local"


class Backend:
    """Runs programs for the stages; see the module docstring. Subclasses set :attr:`name` and :meth:`execute`."""

    name: BackendName = "local"
    prints_output = True  # whether :meth:`pool` exists, i.e. the stage can see what each program printed

    def __init__(self, cfg: CureConfig) -> None:
        self.cfg = cfg

    def execute(self, rollouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Execution records for ``rollouts``: every program on its ground-truth then generated tests."""
        return execute_rollouts(rollouts, self.cfg.execute)

    def pool(self) -> SandboxPool:
        """A sandbox pool with the ``execute`` section's isolation and limits (use as a context manager); its jobs
        may ask for what each program printed (``Job.want_output``)."""
        return sandbox_pool(self.cfg.execute)


class LocalBackend(Backend):
    name: BackendName = "local"


class ContainerBackend(Backend):
    """Containers set up as the cluster Job's pods (:mod:`cure.sandbox.container` translates the Job's pod spec);
    programs whose output a stage reads run in the local pool."""

    name: BackendName = "container"

    def execute(self, rollouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        e = self.cfg.execute
        return run_shards(rollouts, e.shards, workers=e.workers or 2, memory_mb=e.memory_mb,
                          output_limit=e.output_limit_bytes, wall_factor=e.wall_factor)


class KubernetesBackend(Backend):
    """An Indexed Job of gVisor pods; shards and results travel through the store under the experiment."""

    name: BackendName = "kubernetes"
    prints_output = False

    def execute(self, rollouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg = self.cfg
        prefix = f"{cfg.pipeline.experiment}/sandbox/{uuid.uuid4().hex[:12]}"
        return run_on_cluster(rollouts, open_store(cfg.pipeline.store_uri), prefix, **settings_from_config(cfg.execute))

    def pool(self) -> SandboxPool:
        raise ValueError("this step needs what each program prints, which the kubernetes execute backend does not "
                         "return; set execute.backend=local for it")


BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "container": ContainerBackend,
                                      "kubernetes": KubernetesBackend}


def execution_backend(cfg: CureConfig) -> Backend:
    """The backend ``cfg`` asks for: the one place that decides where programs run."""
    return BACKENDS[backend_name(cfg)](cfg)


def run_programs(rollouts: list[dict[str, Any]], cfg: CureConfig) -> list[dict[str, Any]]:
    """Execution records for ``rollouts`` on the configured backend (``execution_backend(cfg).execute``)."""
    return execution_backend(cfg).execute(rollouts)
