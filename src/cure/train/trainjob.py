"""Multi-node training as a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1).

The alternative to :mod:`cure.train.k8s` (Training Operator v1 ``PyTorchJob``) for clusters that run Kubeflow
Trainer v2, chosen with ``train.job_api=trainjob``. A TrainJob names a training runtime (default the
``torch-distributed`` ClusterTrainingRuntime that Trainer installs) and overrides its trainer container: image,
command, environment, node count, processes per node and resources. The runtime's torch plugin sets the
``PET_*`` rendezvous variables torchrun reads, as the Training Operator does, so every node runs the same
:func:`cure.train.launch.node_main`.

Only the TrainJob fields that v2's releases so far share are used (``runtimeRef`` and ``trainer``): the pod-level
override API changed between releases (``podSpecOverrides``, ``podTemplateOverrides``, ``runtimePatches``), so a
priority class, tolerations or ``/dev/shm`` come from the runtime, not from here. The store Secret's keys reach
the nodes as ``env`` entries with ``secretKeyRef``.

:data:`TRAINJOB_SCHEMA` is written from the v1alpha1 Go types (``TrainJobSpec``, ``RuntimeRef``, ``Trainer``).
"""

from __future__ import annotations

import logging
from typing import Any

from cure.cluster import TRAINJOB
from cure.train import k8s

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = TRAINJOB
_DONE = ("Complete", "Failed")

#: What the train step's account needs for TrainJobs (tests/test_manifests.py checks the Role covers it).
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "watch", "delete"]},
]

_RFC1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
TRAINJOB_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "TrainJob (trainer.kubeflow.org/v1alpha1), from the Trainer v2 Go types",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": f"{GROUP}/{VERSION}"},
        "kind": {"const": KIND},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": _RFC1035, "maxLength": 63},
                           "namespace": {"type": "string"}, "labels": {"type": "object"}},
        },
        "spec": {
            "type": "object",
            "required": ["runtimeRef"],
            "properties": {
                "runtimeRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 253},
                                   "apiGroup": {"type": "string"},
                                   "kind": {"enum": ["ClusterTrainingRuntime", "TrainingRuntime"]}},
                },
                "trainer": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "image": {"type": "string", "maxLength": 500},
                        "command": {"type": "array", "items": {"type": "string"}, "maxItems": 128},
                        "args": {"type": "array", "items": {"type": "string"}, "maxItems": 128},
                        "env": {"type": "array", "maxItems": 128, "items": {"type": "object", "required": ["name"]}},
                        "numNodes": {"type": "integer", "minimum": 1},
                        "numProcPerNode": {"type": "integer", "minimum": 1},
                        "resourcesPerNode": {"type": "object", "additionalProperties": False,
                                             "properties": {"limits": {"type": "object"},
                                                            "requests": {"type": "object"}}},
                    },
                },
                "suspend": {"type": "boolean"},
            },
        },
    },
}


def build_trainjob(name: str, namespace: str, image: str, command: list[str], *, nodes: int, procs_per_node: int,
                   gpus_per_node: int, cpu: str, memory: str, secret: str | None = None,
                   secret_keys: tuple[str, ...] = ("CURE_S3_ENDPOINT", "CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY",
                                                   "CURE_S3_REGION"),
                   runtime: str = "torch-distributed", labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A TrainJob of ``nodes`` x ``procs_per_node`` running ``command`` in the runtime's trainer container."""
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus_per_node:
        limits["nvidia.com/gpu"] = str(gpus_per_node)
    env: list[dict[str, Any]] = []
    for key in secret_keys if secret else ():
        ref = {"name": secret, "key": key}
        if key == "CURE_S3_REGION":
            ref["optional"] = True
        env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "cure", "app.kubernetes.io/component": "train",
                                **(labels or {})}},
        "spec": {
            "runtimeRef": {"name": runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": image,
                "command": list(command),
                "env": env,
                "numNodes": nodes,
                "numProcPerNode": procs_per_node,
                "resourcesPerNode": {"requests": dict(limits), "limits": dict(limits)},
            },
        },
    }


def validate_trainjob(spec: dict) -> None:
    """Raise ValueError listing every way ``spec`` breaks :data:`TRAINJOB_SCHEMA`."""
    errors = k8s.schema_errors(TRAINJOB_SCHEMA, spec)
    if errors:
        raise ValueError("invalid TrainJob:\n  " + "\n  ".join(errors))


def job_phase(obj: dict) -> str | None:
    """``Complete`` / ``Failed`` once the TrainJob has finished, else None."""
    return k8s.job_phase(obj, _DONE)


def run_trainjob(spec: dict, api: Any, *, timeout_s: float = 24 * 3600, poll_s: float = 10.0) -> dict:
    """Validate, create, wait for Complete/Failed, delete. Raises RuntimeError on Failed, TimeoutError late."""
    validate_trainjob(spec)
    name, ns = spec["metadata"]["name"], spec["metadata"]["namespace"]
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, spec)
    log.info("created TrainJob %s/%s", ns, name)
    try:
        obj = k8s.wait_custom_job(api, GROUP, VERSION, PLURAL, KIND, name, ns, done=_DONE, timeout_s=timeout_s,
                                  poll_s=poll_s, timeout_hint=" (train.job_timeout_s)")
    finally:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                body={"propagationPolicy": "Foreground"})
        except Exception as e:  # already gone
            log.debug("delete TrainJob %s: %s", name, e)
    if job_phase(obj) == "Failed":
        conds = (obj.get("status") or {}).get("conditions") or []
        raise RuntimeError(f"TrainJob {ns}/{name} failed: {conds[-1].get('message', '') if conds else ''}; see "
                           f"`kubectl -n {ns} logs -l jobset.sigs.k8s.io/jobset-name={name}`")
    return obj
