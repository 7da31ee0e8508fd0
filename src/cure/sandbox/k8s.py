"""The cluster path of the execute stage: shard the rollouts and run them as an Indexed Kubernetes Job.

Why a Job of our own: the KFP Kubernetes extension cannot set ``runtimeClassName``, and the pods that run model
written programs must be gVisor sandboxes. Each pod (label ``app.kubernetes.io/component: cure-sandbox``, which
the NetworkPolicy ``cure-sandbox-deny-all`` selects) runs as non-root with a read-only root filesystem, all
capabilities dropped, seccomp RuntimeDefault, no service-account token, CPU/memory limits and an emptyDir /tmp.

Data flow, with no network and no credentials in the sandbox pods:

1. the launcher writes shard ``i`` (gzip JSON Lines) to the artifact store (``<prefix>/shard-<i>.jsonl.gz``, the
   record of what ran) and into a ConfigMap, all of which are projected into every pod at ``/shard``;
2. pod ``i`` (``JOB_COMPLETION_INDEX``) runs :mod:`cure.sandbox.shard` on its file and prints its execution
   records to its log between marker lines;
3. the launcher waits for the Job, reads each pod's log, stores ``<prefix>/out-<i>.jsonl.gz`` and returns the
   records in the input order; then deletes the Job and the ConfigMaps.

The store is duck-typed (``put_file(key, path)``, ``get_file(key, path)``), e.g. :class:`cure.store.Store`.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from cure.sandbox.shard import decode_records, encode_records, parse_results_block

log = logging.getLogger(__name__)

COMPONENT_LABEL = {"app.kubernetes.io/component": "cure-sandbox"}
CONFIGMAP_LIMIT = 900 * 1024  # bytes of gzip per shard ConfigMap (the API limit is 1 MiB including metadata)

# What this module does with the Kubernetes API (tests/test_manifests.py checks the shipped Role covers it).
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "delete"]},
]


class Store(Protocol):
    def put_file(self, key: str, path: str | Path) -> Any: ...

    def get_file(self, key: str, path: str | Path) -> Any: ...


def _pull_policy() -> str:
    from cure.images import pull_policy

    return pull_policy()


def default_image() -> str:
    """The sandbox image from :mod:`cure.images` when that module is present."""
    from cure.images import image_for

    return image_for("sandbox")


def build_job(
    name: str,
    shards: int,
    configmaps: list[str],
    image: str | None = None,
    namespace: str = "cure",
    cpu: str = "2",
    memory: str = "4Gi",
    workers: int = 2,
    memory_mb: int = 1024,
    parallelism: int | None = None,
    deadline_s: int = 3600,
    tmp_size: str = "1Gi",
) -> dict[str, Any]:
    """The Indexed batch/v1 Job (a plain dict, as the API takes it) that runs ``shards`` sandbox pods."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    image = image or default_image()
    labels = {**COMPONENT_LABEL, "app.kubernetes.io/name": "cure", "cure/job": name}
    container = {
        "name": "execute",
        "image": image,
        "imagePullPolicy": _pull_policy(),
        "command": ["python", "-m", "cure.sandbox.shard"],
        "args": ["--dir", "/shard", "--workers", str(workers), "--memory-mb", str(memory_mb)],
        "env": [{"name": "CURE_SANDBOX_OUTER", "value": "gvisor-pod"}, {"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shard", "mountPath": "/shard", "readOnly": True}],
    }
    pod_spec = {
        "runtimeClassName": "gvisor",
        "serviceAccountName": "cure-sandbox",  # no RBAC, no token (manifests/base/serviceaccounts.yaml)
        "priorityClassName": "cure-sandbox",  # the cure-sandbox ResourceQuota applies to this class
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}},
            {"name": "shard", "projected": {"sources": [{"configMap": {"name": cm}} for cm in configmaps]}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": parallelism or shards,
            "backoffLimit": 2 * shards,
            "activeDeadlineSeconds": deadline_s,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def shard_rollouts(rollouts: list[dict], shards: int) -> list[list[dict]]:
    """Round-robin split (keeps shard sizes even when tasks differ in size), never an empty shard."""
    shards = max(1, min(shards, len(rollouts)))
    return [rollouts[i::shards] for i in range(shards)]


def run_on_cluster(
    rollouts: list[dict],
    store: Store,
    prefix: str,
    shards: int,
    image: str | None = None,
    namespace: str = "cure",
    workers: int = 2,
    memory_mb: int = 1024,
    cpu: str = "2",
    memory: str = "4Gi",
    timeout_s: float = 3600,
    poll_s: float = 5.0,
    api_client: Any = None,
    apis: tuple[Any, Any] | None = None,
) -> list[dict]:
    """Run the execute stage as an Indexed Job; return the execution records in the order of ``rollouts``.

    ``apis`` = (BatchV1Api, CoreV1Api)-like objects; by default they are built from ``api_client`` or from the
    in-cluster / kube config.
    """
    if apis is None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        apis = (client.BatchV1Api(api_client), client.CoreV1Api(api_client))
    batch, core = apis
    name = f"cure-execute-{uuid.uuid4().hex[:8]}"
    parts = shard_rollouts(rollouts, shards)
    order = {r["task_id"]: i for i, r in enumerate(rollouts)}
    configmaps: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i, part in enumerate(parts):
                data = encode_records(part)
                if len(data) > CONFIGMAP_LIMIT:
                    raise ValueError(
                        f"shard {i} is {len(data)} bytes gzipped, over the ConfigMap limit {CONFIGMAP_LIMIT}; "
                        f"use more shards (now {len(parts)})"
                    )
                path = Path(tmp) / f"shard-{i}.jsonl.gz"
                path.write_bytes(data)
                store.put_file(f"{prefix}/shard-{i}.jsonl.gz", path)
                cm = f"{name}-shard-{i}"
                core.create_namespaced_config_map(
                    namespace,
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": cm, "labels": {"cure/job": name}},
                        "binaryData": {f"shard-{i}.jsonl.gz": _b64(data)},
                    },
                )
                configmaps.append(cm)
            job = build_job(name, len(parts), configmaps, image, namespace, cpu, memory, workers, memory_mb)
            batch.create_namespaced_job(namespace, job)
            log.info("created Job %s/%s with %d shards", namespace, name, len(parts))
            _wait(batch, namespace, name, len(parts), timeout_s, poll_s)
            records: list[dict] = []
            for i in range(len(parts)):
                out = parse_results_block(_shard_log(core, namespace, name, i))
                path = Path(tmp) / f"out-{i}.jsonl.gz"
                path.write_bytes(encode_records(out))
                store.put_file(f"{prefix}/out-{i}.jsonl.gz", path)
                records.extend(out)
        finally:
            _cleanup(batch, core, namespace, name, configmaps)
    records.sort(key=lambda r: order[r["task_id"]])
    if len(records) != len(rollouts):
        raise RuntimeError(f"Job {name}: expected {len(rollouts)} execution records, gathered {len(records)}")
    return records


def load_outputs(store: Store, prefix: str, shards: int) -> list[dict]:
    """Re-read the gathered shard outputs of an earlier run from the store."""
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(shards):
            path = Path(tmp) / f"out-{i}.jsonl.gz"
            store.get_file(f"{prefix}/out-{i}.jsonl.gz", path)
            records.extend(decode_records(path.read_bytes()))
    return records


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _wait(batch: Any, namespace: str, name: str, shards: int, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = batch.read_namespaced_job_status(name, namespace).status
        for cond in status.conditions or []:
            if cond.type == "Failed" and cond.status == "True":
                raise RuntimeError(f"Job {namespace}/{name} failed: {cond.reason}: {cond.message}")
            if cond.type == "Complete" and cond.status == "True":
                return
        if (status.succeeded or 0) >= shards:
            return
        time.sleep(poll_s)
    raise TimeoutError(f"Job {namespace}/{name} did not finish within {timeout_s:.0f}s")


def _shard_log(core: Any, namespace: str, name: str, index: int) -> str:
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"cure/job={name},batch.kubernetes.io/job-completion-index={index}"
    ).items
    done = [p for p in pods if p.status.phase == "Succeeded"]
    if not done:
        raise RuntimeError(f"Job {namespace}/{name}: no succeeded pod for shard {index}")
    return core.read_namespaced_pod_log(done[0].metadata.name, namespace, container="execute")


def _cleanup(batch: Any, core: Any, namespace: str, name: str, configmaps: list[str]) -> None:
    try:
        batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
    except Exception as e:  # not created, or already gone
        log.debug("delete Job %s: %s", name, e)
    for cm in configmaps:
        try:
            core.delete_namespaced_config_map(cm, namespace)
        except Exception as e:
            log.debug("delete ConfigMap %s: %s", cm, e)
