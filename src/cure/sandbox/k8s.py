"""The cluster path of the execute stage: shard the rollouts and run them as an Indexed Kubernetes Job.

Why a Job of our own: the KFP Kubernetes extension cannot set ``runtimeClassName``, and the pods that run model
written programs must be gVisor sandboxes. Each pod (label ``app.kubernetes.io/component: cure-sandbox``, which
the NetworkPolicy ``cure-sandbox-deny-all`` selects) has a read-only root filesystem, seccomp RuntimeDefault, no
privilege escalation, no service-account token, CPU/memory limits, a memory-backed emptyDir /tmp and /shard
read-only. Its worker runs as root *inside gVisor* with only the six capabilities it needs
(:func:`sandbox_security_context`, the one privilege setting of every sandbox container, see below).

Why root inside gVisor and not uid 10001 without capabilities: the worker gives each program a uid of its own
(``nobody``; the next uid down for each further worker of the pod) and kills whatever it leaves behind; that takes CAP_SETUID/SETGID (and KILL, CHOWN, FOWNER,
DAC_OVERRIDE for its temp dirs and clean-up). Without them programs share the worker's uid, so a program can kill
the shard process (the pod fails, and with it the execute stage), write /tmp and leave processes the worker cannot
kill: 6 of the 21 adversarial programs got through that way (tests/test_containers.py). The root here is the
sentry's, in gVisor's user-space kernel, which is the boundary to the node; all six capabilities are allowed by
Pod Security "baseline" (the ``cure`` namespace enforces it), not by "restricted". As pid 1 of the container, the
shard process reaps the orphans it adopts and closes /tmp (an emptyDir is world-writable) to the programs.

Data flow, with no network and no credentials in the sandbox pods:

1. the launcher writes shard ``k`` (gzip JSON Lines) to the artifact store (``<prefix>/shard-<k>.jsonl.gz``, the
   record of what ran) and into a ConfigMap, all of which are projected into every pod at ``/shard``;
2. pod ``i`` (``JOB_COMPLETION_INDEX``) runs :mod:`cure.sandbox.shard` on its file and prints its execution
   records to its log between marker lines;
3. the launcher waits for the Job, reads each pod's log, stores ``<prefix>/out-<k>.jsonl.gz`` and returns the
   records in the input order; then deletes the Job and the ConfigMaps.

Where the Job lives: namespace ``execute.namespace`` (default ``cure``, where manifests/ put the ``cure-sandbox``
account, the deny-all NetworkPolicy, the quota and the Role the launcher needs, :data:`RBAC_RULES`).

Cleanup, whatever ends the launcher:

* normal end or an error: ``finally`` deletes the Job (background propagation: its pods go too) and the ConfigMaps;
* SIGTERM / SIGINT (a cancelled KFP run, a pod eviction): a handler turns the signal into ``SystemExit(128+sig)``,
  so the same ``finally`` runs; further signals are ignored while it does;
* SIGKILL or a lost node: Kubernetes' garbage collector. The ConfigMaps carry an ownerReference to their Job,
  and the Job one to the launching pod when both live in the same namespace. Kubernetes forbids owners in
  another namespace (a dependent whose owner is elsewhere is treated as orphaned and deleted at once), so a Job
  in ``cure`` launched from a pod in ``kubeflow`` carries the pod's identity as annotations only
  (``cure.dev/launcher-pod``, ``cure.dev/launcher-uid``) and is bounded by ``activeDeadlineSeconds`` and
  ``ttlSecondsAfterFinished``. The launcher finds its pod from ``CURE_POD_NAME`` / ``CURE_POD_NAMESPACE`` /
  ``CURE_POD_UID`` (downward API), else ``HOSTNAME`` and the service-account namespace file, and reads the uid
  from the API when the Job goes to its own namespace.

Results travel in the pod log, and the API returns only the current log file: the kubelet rotates a
container's log at ``containerLogMaxSize`` (10 MiB by default). A pod therefore prints at most
``log_limit_bytes`` (default :data:`LOG_RESULT_LIMIT`, 8 MiB of base64) of results; a shard whose results are
larger prints a "too large" marker instead, and the launcher splits that shard in two and runs the halves as a
new Job, until every part fits (a single task over the limit is an error that says which setting to raise).

The store is duck-typed (``put_file(key, path)``, ``get_file(key, path)``), e.g. :class:`cure.store.Store`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cure.cluster import PYTORCHJOB, RUN_LABEL, SA_NAMESPACE, TRAINJOB, cleanup_on_signals, run_labels
from cure.images import image_for, pull_policy
from cure.sandbox.gvisor import CAPS
from cure.sandbox.shard import ResultsTooLarge, decode_records, encode_records, parse_results_block

log = logging.getLogger(__name__)

COMPONENT_LABEL = {"app.kubernetes.io/component": "cure-sandbox"}
RUNTIME_CLASS = "gvisor"  # manifests/base/runtimeclass-gvisor.yaml: handler runsc
#: Capabilities the worker keeps: those of the single-machine sandbox (KILL SETUID SETGID CHOWN FOWNER
#: DAC_OVERRIDE), every one in Pod Security "baseline"'s allowed list.
SANDBOX_CAPABILITIES = tuple(c.removeprefix("CAP_") for c in CAPS)
CONFIGMAP_LIMIT = 900 * 1024  # bytes of gzip per shard ConfigMap (the API limit is 1 MiB including metadata)
LOG_RESULT_LIMIT = 8 << 20  # bytes of results block per pod log, under the kubelet's default 10 MiB rotation
LAUNCHER_ANNOTATIONS = ("cure.dev/launcher-pod", "cure.dev/launcher-uid")

# What this module does with the Kubernetes API (tests/test_manifests.py checks the shipped Role covers it).
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]},  # _wait: read_namespaced_job_status
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "patch", "delete"]},
]


class Store(Protocol):
    def put_file(self, key: str, path: str | Path) -> Any: ...

    def get_file(self, key: str, path: str | Path) -> Any: ...


@dataclass(frozen=True)
class PodRef:
    """The pod that launches sandbox Jobs: an owner for the Job when it is in the same namespace."""

    name: str
    namespace: str
    uid: str = ""


def _pull_policy() -> str:
    return pull_policy()


def default_image() -> str:
    """The sandbox image from :mod:`cure.images` when that module is present."""
    return image_for("sandbox")


def sandbox_security_context() -> dict[str, Any]:
    """The sandbox container's securityContext: root inside gVisor, every capability dropped but the worker's six.

    The one privilege setting of sandbox containers: the cluster Job uses it, and the local container backend
    (:func:`cure.sandbox.container.container_spec`) translates the Job's pod spec instead of keeping its own.
    """
    return {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": list(SANDBOX_CAPABILITIES)},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def cpu_count(quantity: str) -> int:
    """Whole CPUs in a Kubernetes CPU quantity ("2", "1.5", "2500m"), at least 1."""
    q = str(quantity).strip()
    try:
        value = float(q[:-1]) / 1000 if q.endswith("m") else float(q)
    except ValueError as e:
        raise ValueError(f"execute.pod_cpu={quantity!r} is not a Kubernetes CPU quantity (e.g. 2 or 2500m)") from e
    return max(1, math.floor(value))


def build_job(
    name: str,
    shards: int,
    configmaps: list[str],
    image: str | None = None,
    namespace: str = "cure",
    cpu: str = "2",
    memory: str = "4Gi",
    workers: int = 0,
    memory_mb: int = 1024,
    parallelism: int | None = None,
    deadline_s: int = 3600,
    tmp_size: str = "1Gi",
    output_limit_bytes: int = 1 << 20,
    wall_factor: float = 3.0,
    log_limit_bytes: int = LOG_RESULT_LIMIT,
    owner: PodRef | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The Indexed batch/v1 Job (a plain dict, as the API takes it) that runs ``shards`` sandbox pods.

    ``workers`` 0 means one sandbox per CPU of the pod's limit (``os.cpu_count()`` in a container sees the
    node's CPUs, not the limit). ``owner``: the launching pod; it becomes the Job's owner only when it is in
    ``namespace`` (Kubernetes has no cross-namespace owners), and is recorded in annotations either way.
    ``run_id``: the KFP run's id for label ``RUN_LABEL`` (default ``CURE_RUN_ID``).
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    image = image or default_image()
    workers = workers or cpu_count(cpu)
    labels = {**COMPONENT_LABEL, "app.kubernetes.io/name": "cure", "cure/job": name, **run_labels(run_id)}
    container = {
        "name": "execute",
        "image": image,
        "imagePullPolicy": _pull_policy(),
        "command": ["python", "-m", "cure.sandbox.shard"],
        "args": [
            "--dir", "/shard", "--workers", str(workers), "--memory-mb", str(memory_mb),
            "--output-limit", str(output_limit_bytes), "--wall-factor", str(wall_factor),
            "--log-limit", str(log_limit_bytes),
        ],
        "env": [{"name": "CURE_SANDBOX_OUTER", "value": "gvisor-pod"}, {"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "securityContext": sandbox_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shard", "mountPath": "/shard", "readOnly": True}],
    }
    sc = sandbox_security_context()
    pod_spec = {
        "runtimeClassName": RUNTIME_CLASS,
        "serviceAccountName": "cure-sandbox",  # no RBAC, no token (manifests/base/serviceaccounts.yaml)
        "priorityClassName": "cure-sandbox",  # the cure-sandbox ResourceQuota applies to this class
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "shareProcessNamespace": False,  # the shard process is pid 1: it reaps the programs' orphans
        "securityContext": {k: sc[k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")},
        "containers": [container],
        "volumes": [
            # in memory (counts against the pod's memory limit); the shard process closes it to programs
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": tmp_size}},
            {"name": "shard", "projected": {"sources": [{"configMap": {"name": cm}} for cm in configmaps]}},
        ],
    }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner is not None:
        metadata["annotations"] = {
            LAUNCHER_ANNOTATIONS[0]: f"{owner.namespace}/{owner.name}",
            LAUNCHER_ANNOTATIONS[1]: owner.uid,
        }
        if owner.namespace == namespace and owner.uid:
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": owner.name, "uid": owner.uid, "blockOwnerDeletion": False}
            ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
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


def delete_run_objects(run_id: str, namespaces: list[str], workflow: str = "", workspace_namespace: str = "",
                       api_client: Any = None) -> dict[str, int]:
    """What a KFP run leaves when a step is killed: its sandbox Jobs, PyTorchJobs and TrainJobs (label
    ``RUN_LABEL``) in ``namespaces``, and its workspace PVC (Argo names it ``<workflow>-kfp-workspace``) in
    ``workspace_namespace``. The run's exit handler calls this; objects already gone are fine.

    Returns counts per kind. Needs list/delete on those kinds (manifests/base/role.yaml; the PVC: KFP's runner
    Role in its own namespace)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    if not run_labels(run_id):
        raise ValueError(f"run id {run_id!r} is not a label value; nothing deleted")
    batch, core = _apis(api_client)
    custom = client.CustomObjectsApi(batch.api_client)
    selector = f"{RUN_LABEL}={run_id}"
    counts = {"jobs": 0, "pytorchjobs": 0, "trainjobs": 0, "workspace": 0}

    def gone(call: Any) -> bool:
        try:
            call()
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    for ns in dict.fromkeys(n for n in namespaces if n):
        for job in batch.list_namespaced_job(ns, label_selector=selector).items:
            counts["jobs"] += gone(lambda j=job, n=ns: batch.delete_namespaced_job(j.metadata.name, n,
                                                                             propagation_policy="Background"))
        for kind in (PYTORCHJOB, TRAINJOB):
            try:
                items = custom.list_namespaced_custom_object(kind.group, kind.version, ns, kind.plural,
                                                             label_selector=selector)["items"]
            except ApiException as e:
                if e.status == 404:  # the CRD is not installed: nothing of that kind can exist
                    continue
                raise
            for obj in items:
                counts[kind.plural] += gone(lambda o=obj, m=kind, n=ns: custom.delete_namespaced_custom_object(
                    m.group, m.version, n, m.plural, o["metadata"]["name"], body={"propagationPolicy": "Foreground"}))
    if workflow and workspace_namespace:
        counts["workspace"] += gone(lambda: core.delete_namespaced_persistent_volume_claim(
            f"{workflow}-kfp-workspace", workspace_namespace))
    log.info("run %s: deleted %s", run_id, counts)
    return counts


def cleanup_after_run(run_id: str, workflow: str, namespaces: list[str]) -> dict[str, int]:
    """The exit handler's step, in a pod: :func:`delete_run_objects` in ``namespaces`` (empty: the default
    ``cure``) and the workspace PVC in the pod's own namespace (KFP's)."""
    own = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else ""
    return delete_run_objects(run_id, [n or "cure" for n in namespaces], workflow, own)


def job_owner_reference(job: Any) -> dict[str, Any]:
    """An ownerReference to a created Job (the API's answer: a dict or a V1Job), for its ConfigMaps."""
    meta = job["metadata"] if isinstance(job, dict) else job.metadata
    name, uid = (meta["name"], meta["uid"]) if isinstance(meta, dict) else (meta.name, meta.uid)
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "blockOwnerDeletion": False}


def shard_rollouts(rollouts: list[dict], shards: int) -> list[list[dict]]:
    """Round-robin split (keeps shard sizes even when tasks differ in size), never an empty shard."""
    shards = max(1, min(shards, len(rollouts)))
    return [rollouts[i::shards] for i in range(shards)]


def launcher_pod(core: Any = None, namespace: str | None = None, env: dict[str, str] | None = None) -> PodRef | None:
    """The pod this process runs in, or None outside a pod.

    Name: ``CURE_POD_NAME``, else ``HOSTNAME`` (a pod's hostname is its name); namespace: ``CURE_POD_NAMESPACE``,
    else the service-account namespace file; uid: ``CURE_POD_UID``, else read from the API, but only when the
    Job goes to the pod's own namespace (the only case an ownerReference is allowed, and one the Role covers).
    """
    env = dict(os.environ) if env is None else env
    name = env.get("CURE_POD_NAME") or env.get("HOSTNAME")
    pod_ns = env.get("CURE_POD_NAMESPACE") or (SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else "")
    if not name or not pod_ns:
        return None
    uid = env.get("CURE_POD_UID", "")
    if not uid and core is not None and namespace == pod_ns:
        try:
            uid = core.read_namespaced_pod(name, pod_ns).metadata.uid or ""
        except Exception as e:  # no such pod (HOSTNAME was not a pod name) or no right to read it
            log.warning("cannot read pod %s/%s for its uid (%s); the sandbox Job gets no ownerReference", pod_ns, name, e)
    return PodRef(name, pod_ns, uid)


def settings_from_config(cfg: Any) -> dict[str, Any]:
    """:func:`run_on_cluster` keyword arguments from an :class:`cure.config.ExecuteConfig`.

    Inside a pod the programs run with isolation ``none``: the pod is the gVisor sandbox (``runtimeClassName``).
    """
    namespace = cfg.namespace or (SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else "cure")
    return {
        "shards": cfg.shards,
        "namespace": namespace,
        "workers": cfg.workers,
        "memory_mb": cfg.memory_mb,
        "output_limit_bytes": cfg.output_limit_bytes,
        "wall_factor": cfg.wall_factor,
        "cpu": cfg.pod_cpu,
        "memory": cfg.pod_memory,
        "timeout_s": cfg.job_timeout_s,
    }


def _apis(api_client: Any) -> tuple[Any, Any]:
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.BatchV1Api(api_client), client.CoreV1Api(api_client)


def run_on_cluster(
    rollouts: list[dict],
    store: Store,
    prefix: str,
    shards: int,
    image: str | None = None,
    namespace: str = "cure",
    workers: int = 0,
    memory_mb: int = 1024,
    cpu: str = "2",
    memory: str = "4Gi",
    timeout_s: float = 3600,
    poll_s: float = 5.0,
    api_client: Any = None,
    apis: tuple[Any, Any] | None = None,
    output_limit_bytes: int = 1 << 20,
    wall_factor: float = 3.0,
    log_limit_bytes: int = LOG_RESULT_LIMIT,
    owner: PodRef | None | bool = True,
) -> list[dict]:
    """Run the execute stage as Indexed Jobs; return the execution records in the order of ``rollouts``.

    ``apis`` = (BatchV1Api, CoreV1Api)-like objects; by default they are built from ``api_client`` or from the
    in-cluster / kube config. ``owner``: the launching pod; True = find it (:func:`launcher_pod`), None = none.
    Shards whose results exceed ``log_limit_bytes`` are split and re-run (see the module docstring).
    """
    batch, core = apis if apis is not None else _apis(api_client)
    if owner is True:
        owner = launcher_pod(core, namespace)
    order = {r["task_id"]: i for i, r in enumerate(rollouts)}
    settings = {"image": image, "namespace": namespace, "cpu": cpu, "memory": memory, "workers": workers,
                "memory_mb": memory_mb, "output_limit_bytes": output_limit_bytes, "wall_factor": wall_factor,
                "log_limit_bytes": log_limit_bytes, "owner": owner or None, "deadline_s": max(1, int(timeout_s))}
    records: list[dict] = []
    pending = shard_rollouts(rollouts, shards)
    counter = 0
    with cleanup_on_signals(), tempfile.TemporaryDirectory() as tmp:
        while pending:
            done, too_large = _run_job(batch, core, pending, store, prefix, counter, Path(tmp), settings, timeout_s, poll_s)
            counter += len(pending)
            records.extend(done)
            pending = []
            for part, size in too_large:
                if len(part) == 1:
                    raise RuntimeError(
                        f"task {part[0]['task_id']}: its execution records are {size} bytes in the pod log, over "
                        f"log_limit_bytes={log_limit_bytes}; raise it (and the kubelet's containerLogMaxSize, "
                        "default 10 MiB, above it) or lower rollout.k_code / rollout.k_test"
                    )
                half = (len(part) + 1) // 2
                log.info("a shard of %d tasks had %d bytes of results, over %d: splitting it in two",
                         len(part), size, log_limit_bytes)
                pending += [part[:half], part[half:]]
    records.sort(key=lambda r: order[r["task_id"]])
    if len(records) != len(rollouts):
        raise RuntimeError(f"sandbox Jobs: expected {len(rollouts)} execution records, gathered {len(records)}")
    return records


def _run_job(batch: Any, core: Any, parts: list[list[dict]], store: Store, prefix: str, first: int, tmp: Path,
             settings: dict[str, Any], timeout_s: float, poll_s: float) -> tuple[list[dict], list[tuple[list[dict], int]]]:
    """One Indexed Job over ``parts`` (stored as shard ``first + i``): the records, and the parts too large to log."""
    namespace = settings["namespace"]
    name = f"cure-execute-{uuid.uuid4().hex[:8]}"
    configmaps: list[str] = []
    records: list[dict] = []
    too_large: list[tuple[list[dict], int]] = []
    try:
        for i, part in enumerate(parts):
            data = encode_records(part)
            if len(data) > CONFIGMAP_LIMIT:
                raise ValueError(
                    f"shard {first + i} is {len(data)} bytes gzipped, over the ConfigMap limit {CONFIGMAP_LIMIT}; "
                    f"use more shards (execute.shards, now {len(parts)})"
                )
            path = tmp / f"shard-{first + i}.jsonl.gz"
            path.write_bytes(data)
            store.put_file(f"{prefix}/shard-{first + i}.jsonl.gz", path)
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
        job = build_job(name, len(parts), configmaps, **settings)
        created = batch.create_namespaced_job(namespace, job)
        log.info("created Job %s/%s with %d shards", namespace, name, len(parts))
        # The ConfigMaps go with their Job, even if this process is killed before it can delete them.
        owner_ref = {"metadata": {"ownerReferences": [job_owner_reference(created)]}}
        for cm in configmaps:
            core.patch_namespaced_config_map(cm, namespace, owner_ref)
        _wait(batch, namespace, name, len(parts), timeout_s, poll_s)
        for i, part in enumerate(parts):
            try:
                out = parse_results_block(_shard_log(core, namespace, name, i))
            except ResultsTooLarge as e:
                too_large.append((part, e.size))
                continue
            path = tmp / f"out-{first + i}.jsonl.gz"
            path.write_bytes(encode_records(out))
            store.put_file(f"{prefix}/out-{first + i}.jsonl.gz", path)
            records.extend(out)
    finally:
        _cleanup(batch, core, namespace, name, configmaps)
    return records, too_large


def load_outputs(store: Store, prefix: str, shards: int) -> list[dict]:
    """Re-read the gathered shard outputs of an earlier run from the store (``shards``: outputs written)."""
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(shards):
            path = Path(tmp) / f"out-{i}.jsonl.gz"
            try:
                store.get_file(f"{prefix}/out-{i}.jsonl.gz", path)
            except Exception:  # a shard that was split has no output of its own
                continue
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
    raise TimeoutError(f"Job {namespace}/{name} did not finish within {timeout_s:.0f}s (execute.job_timeout_s)")


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
