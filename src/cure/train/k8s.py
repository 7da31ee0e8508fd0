"""Multi-node training as a Kubeflow Training Operator ``PyTorchJob`` (kubeflow.org/v1).

The training component calls :func:`run_pytorchjob` when a step needs more than one node: it creates the job
with the ``kubernetes`` client, waits for the ``Succeeded`` / ``Failed`` condition, and deletes the job (and so
its pods) whatever happened. Single-node multi-GPU training does not come here: it runs ``torchrun`` inside the
component's own pod (``cure train --nproc-per-node N``).

Every replica runs ``torchrun -m cure_cli train ...``; the operator injects the rendezvous settings
(``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``) that torchrun
reads from the environment. The container must be named ``pytorch`` for the operator to inject them. Model,
data and output live on a shared volume (a ReadWriteMany PVC) mounted on every replica: ZeRO-3 writes optimizer
shards from every rank and rank 0 writes the checkpoint there.

:data:`PYTORCHJOB_SCHEMA` is a JSON schema written from the Training Operator's CRD fields (``PyTorchJobSpec``,
``ReplicaSpec``, ``RunPolicy``); :func:`validate_pytorchjob` checks a spec against it and its pod templates with
``kubernetes-validate`` (which knows the core types only).
"""

from __future__ import annotations

import copy
import logging
import re
import time
from typing import Any

from cure.cluster import PYTORCHJOB

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = PYTORCHJOB

#: What the component's service account needs: create/watch/delete PyTorchJobs, read their pods' logs on failure.
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]

_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_REPLICA_SPEC = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": {"type": "object"},
    },
}
PYTORCHJOB_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "PyTorchJob (kubeflow.org/v1), from the Training Operator CRD",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": f"{GROUP}/{VERSION}"},
        "kind": {"const": KIND},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": _DNS1123, "maxLength": 63},
                "namespace": {"type": "string", "pattern": _DNS1123, "maxLength": 63},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["pytorchReplicaSpecs"],
            "additionalProperties": False,
            "properties": {
                "runPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
                        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "suspend": {"type": "boolean"},
                        "managedBy": {"type": "string"},
                        "schedulingPolicy": {
                            "type": "object",
                            "properties": {
                                "minAvailable": {"type": "integer"},
                                "queue": {"type": "string"},
                                "priorityClass": {"type": "string"},
                                "scheduleTimeoutSeconds": {"type": "integer"},
                                "minResources": {"type": "object"},
                            },
                        },
                    },
                },
                "elasticPolicy": {
                    "type": "object",
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 1},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "rdzvBackend": {"type": "string"},
                        "maxRestarts": {"type": "integer", "minimum": 0},
                        "nProcPerNode": {"type": "integer", "minimum": 1},
                    },
                },
                "nprocPerNode": {"type": "string", "pattern": r"^(auto|cpu|gpu|[1-9][0-9]*)$"},
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "required": ["Master"],
                    "propertyNames": {"enum": ["Master", "Worker"]},
                    "additionalProperties": _REPLICA_SPEC,
                    "properties": {
                        "Master": {**_REPLICA_SPEC, "properties": {**_REPLICA_SPEC["properties"], "replicas": {"const": 1}}}
                    },
                },
            },
        },
    },
}


def _name_ok(name: str) -> str:
    if not re.match(_DNS1123, name) or len(name) > 63:
        raise ValueError(f"PyTorchJob name {name!r}: must be a DNS-1123 label (lowercase letters, digits, '-'; <= 63)")
    return name


def build_pytorchjob(
    name: str,
    namespace: str,
    image: str,
    train_args: list[str],
    *,
    nodes: int = 2,
    gpus_per_node: int = 8,
    cpu: str = "16",
    memory: str = "256Gi",
    pvc_name: str = "cure-workspace",
    mount_path: str = "/workspace",
    env: dict[str, str] | None = None,
    secret_env_from: list[str] | None = None,
    service_account: str | None = "cure-train",
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    image_pull_policy: str = "IfNotPresent",
    backoff_limit: int = 0,
    active_deadline_s: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict:
    """A PyTorchJob running ``torchrun -m cure_cli train <train_args>`` on ``nodes`` nodes x ``gpus_per_node``.

    ``train_args`` are ``cure train`` flags whose paths lie under ``mount_path`` (the shared PVC). One Master and
    ``nodes - 1`` Workers; ``gpus_per_node = 0`` gives a CPU job (gloo), handy for a smoke test on a CPU cluster.
    """
    _name_ok(name)
    if nodes < 1:
        raise ValueError(f"build_pytorchjob: nodes must be >= 1, got {nodes}")
    if gpus_per_node < 0:
        raise ValueError(f"build_pytorchjob: gpus_per_node must be >= 0, got {gpus_per_node}")
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus_per_node:
        limits["nvidia.com/gpu"] = str(gpus_per_node)
    container: dict[str, Any] = {
        "name": "pytorch",  # the operator injects the rendezvous variables into this container
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["torchrun", "-m", "cure_cli", "train", *train_args],
        "env": [{"name": k, "value": v} for k, v in sorted((env or {}).items())],
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "volumeMounts": [{"name": "workspace", "mountPath": mount_path}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if secret_env_from:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in secret_env_from]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": pvc_name}},
            # NCCL and DataLoader workers need more shared memory than the container default of 64 MiB.
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = list(tolerations)
    job_labels = {"app.kubernetes.io/name": "cure", "app.kubernetes.io/component": "train", **(labels or {})}
    template = {"metadata": {"labels": dict(job_labels)}, "spec": pod_spec}

    replicas: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "OnFailure", "template": copy.deepcopy(template)}
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": backoff_limit}
    if active_deadline_s is not None:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_s)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels},
        "spec": {
            "runPolicy": run_policy,
            "nprocPerNode": str(gpus_per_node) if gpus_per_node else "1",
            "pytorchReplicaSpecs": replicas,
        },
    }


def schema_errors(schema: dict, spec: dict) -> list[str]:
    """Every way ``spec`` breaks the JSON schema ``schema``, as ``path: message`` lines. Needs ``jsonschema``."""
    import jsonschema

    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(spec)]


def validate_pytorchjob(spec: dict, k8s_version: str = "1.30") -> None:
    """Check ``spec`` against :data:`PYTORCHJOB_SCHEMA` and every pod template against Kubernetes' own schema.

    Raises ``ValueError`` listing what is wrong. Needs ``jsonschema`` and ``kubernetes-validate`` (dev extra).
    """
    import kubernetes_validate

    errors = schema_errors(PYTORCHJOB_SCHEMA, spec)
    for role, rs in (spec.get("spec", {}).get("pytorchReplicaSpecs") or {}).items():
        template = rs.get("template") if isinstance(rs, dict) else None
        if not isinstance(template, dict):
            continue
        containers = template.get("spec", {}).get("containers", [])
        if not any(c.get("name") == "pytorch" for c in containers):
            errors.append(f"spec/pytorchReplicaSpecs/{role}: no container named 'pytorch' (the operator needs one)")
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        try:
            kubernetes_validate.validate(wrapped, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            errors.append(f"spec/pytorchReplicaSpecs/{role}/{where}: {e.message}")
    if errors:
        raise ValueError("invalid PyTorchJob:\n  " + "\n  ".join(errors))


def _api(api: Any | None) -> Any:
    if api is not None:
        return api
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def create_pytorchjob(spec: dict, api: Any | None = None) -> dict:
    """Create the job; returns the created object."""
    api = _api(api)
    ns = spec["metadata"].get("namespace", "default")
    return api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, spec)


def job_phase(obj: dict, done: tuple[str, ...] = ("Succeeded", "Failed")) -> str | None:
    """The first ``done`` condition that is True (``Succeeded`` / ``Failed`` for a PyTorchJob), else None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in done and cond.get("status") == "True":
            return cond["type"]
    return None


def wait_custom_job(api: Any, group: str, version: str, plural: str, kind: str, name: str, namespace: str, *,
                    done: tuple[str, ...], timeout_s: float, poll_s: float, timeout_hint: str = "") -> dict:
    """Poll a custom job object until one of its ``done`` conditions is True; returns the final object.

    Raises TimeoutError after ``timeout_s`` (its message ends with ``timeout_hint``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(group, version, namespace, plural, name)
        if job_phase(obj, done) is not None:
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(f"{kind} {namespace}/{name} did not finish within {timeout_s:.0f}s{timeout_hint}")
        time.sleep(poll_s)


def wait_pytorchjob(name: str, namespace: str, *, timeout_s: float = 24 * 3600, poll_s: float = 10.0,
                    api: Any | None = None) -> dict:
    """Poll until the job succeeds or fails; returns the final object. Raises TimeoutError after ``timeout_s``."""
    return wait_custom_job(_api(api), GROUP, VERSION, PLURAL, KIND, name, namespace,
                           done=("Succeeded", "Failed"), timeout_s=timeout_s, poll_s=poll_s)


def delete_pytorchjob(name: str, namespace: str, api: Any | None = None) -> None:
    """Delete the job and, by foreground propagation, its pods; a job already gone is fine."""
    from kubernetes.client.rest import ApiException

    api = _api(api)
    try:
        api.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body={"propagationPolicy": "Foreground"}
        )
    except ApiException as e:
        if e.status != 404:
            raise


def run_pytorchjob(spec: dict, *, timeout_s: float = 24 * 3600, poll_s: float = 10.0, api: Any | None = None) -> dict:
    """Validate, create, wait and clean up. Returns the final job object; raises RuntimeError if it failed."""
    validate_pytorchjob(spec)
    api = _api(api)
    name, ns = spec["metadata"]["name"], spec["metadata"].get("namespace", "default")
    create_pytorchjob(spec, api)
    log.info("created PyTorchJob %s/%s", ns, name)
    try:
        obj = wait_pytorchjob(name, ns, timeout_s=timeout_s, poll_s=poll_s, api=api)
    finally:
        delete_pytorchjob(name, ns, api)
        log.info("deleted PyTorchJob %s/%s", ns, name)
    if job_phase(obj) != "Succeeded":
        conds = (obj.get("status") or {}).get("conditions") or []
        last = conds[-1].get("message", "") if conds else ""
        raise RuntimeError(f"PyTorchJob {ns}/{name} failed: {last}; see `kubectl logs -l training.kubeflow.org/job-name={name}`")
    return obj
