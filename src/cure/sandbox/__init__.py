"""Sandboxed execution of untrusted programs: the worker (runs inside the sandbox), gVisor, the host-side pool,
and the Kubernetes Job for the cluster path (:mod:`cure.sandbox.k8s`)."""

from cure.sandbox.gvisor import GVisorUnavailable
from cure.sandbox.pool import Job, Limits, SandboxPool, resolve_isolation

__all__ = ["GVisorUnavailable", "Job", "Limits", "SandboxPool", "resolve_isolation"]
