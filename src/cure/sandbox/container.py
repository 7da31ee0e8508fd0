"""Sandbox shards as containers of the sandbox image on a local engine, set up as the cluster Job sets up its pods.

The cluster runs each shard in a pod of ``cure-sandbox`` under ``runtimeClassName: gvisor`` (:mod:`cure.sandbox.k8s`).
This backend (``execute.backend=container``) runs the same image and entrypoint through the Docker API (Docker, or
podman's ``podman system service``) with the same confinement:

- gVisor as the runtime: Docker honours ``runtime=runsc``; podman's Docker API ignores the field, so
  scripts/container-engine.sh serves a second socket, ``/run/podman/sandbox.sock``, whose default runtime is runsc
  (without a network stack). ``$CURE_SANDBOX_DOCKER_HOST`` names it (default: that socket when it exists, else
  ``$DOCKER_HOST``), and every launcher first checks that a container there really runs on gVisor's kernel;
- everything else comes from the Job's own pod spec (:func:`container_spec` builds the Job with
  :func:`cure.sandbox.k8s.build_job` and translates it, strictly, with :func:`pod_to_container`): the worker as
  root inside gVisor with all capabilities dropped but six (:func:`cure.sandbox.k8s.sandbox_security_context`),
  ``no-new-privileges``, a read-only root filesystem, the Job's environment and ``JOB_COMPLETION_INDEX``, its CPU
  and memory limits;
- no network (``network_mode=none``; the cluster: a deny-all NetworkPolicy), no credentials;
- the shard file in ``/shard``, mounted read-only (a ConfigMap in the cluster); ``/tmp`` a tmpfs of the emptyDir's
  size and the kubelet's mode 0777, which the shard process, pid 1, closes to programs;
- ``python -m cure.sandbox.shard`` as the command; results come back through the container log between the same
  marker lines the cluster launcher reads.

Why root inside gVisor with six capabilities (see also :mod:`cure.sandbox.k8s`): each program then runs as
``nobody`` (each further worker of the shard gives its programs the next uid down, so that no worker's cleanup
reaches another's program) and the worker kills whatever it leaves (every process of that uid: the worker is not
pid 1 here, so orphans that leave its subreaper tree are found by uid). As uid 10001 without capabilities, the worker could not
give programs a uid of their own: a program could kill the shard process (failing the container, or pod, and with
it the execute stage), write ``/tmp`` and leave processes behind (6 of the 21 adversarial programs got through).

The shard folder is bind-mounted by the engine, so it must be a path the engine's host sees: when the launcher
itself runs in a container (``cure run --runner docker``), ``$CURE_SANDBOX_SHARED_DIR`` names a folder mounted at
the same path in the launcher's container and on the host.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cure.images import image_for
from cure.sandbox.k8s import COMPONENT_LABEL, build_job, shard_rollouts
from cure.sandbox.shard import encode_records, parse_results_block

log = logging.getLogger(__name__)

SHARED_DIR_ENV = "CURE_SANDBOX_SHARED_DIR"
RUNTIME_ENV = "CURE_SANDBOX_RUNTIME"
HOST_ENV = "CURE_SANDBOX_DOCKER_HOST"
PODMAN_SANDBOX_SOCKET = "/run/podman/sandbox.sock"
LABEL = "cure.sandbox"
ULIMITS = {"nofile": (1024, 4096), "nproc": (1024, 4096)}
GVISOR_RELEASE = "4.4.0"  # the kernel release gVisor reports


def sandbox_host() -> str:
    """Docker API address of the engine that runs sandbox containers (see the module docstring)."""
    host = os.environ.get(HOST_ENV)
    if not host and Path(PODMAN_SANDBOX_SOCKET).is_socket():
        host = f"unix://{PODMAN_SANDBOX_SOCKET}"
    return host or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def sandbox_client() -> Any:
    import docker

    return docker.DockerClient(base_url=sandbox_host())


def check_gvisor(client: Any, image: str) -> None:
    """Refuse to run untrusted code unless a container of ``image`` on ``client`` runs on gVisor."""
    spec = container_spec(image, "/nonexistent", 0)
    spec.update(command=["python", "-c", "import os; print(os.uname().release)"], volumes={})
    c = client.containers.create(**spec)
    try:
        c.start()
        c.wait(timeout=120)
        release = c.logs(stdout=True, stderr=False).decode().strip()
    finally:
        c.remove(force=True)
    if release != GVISOR_RELEASE:
        raise RuntimeError(
            f"sandbox containers on {client.api.base_url} do not run under gVisor (kernel release {release!r}, "
            f"expected {GVISOR_RELEASE}); serve a runsc engine (scripts/container-engine.sh service) and set "
            f"{HOST_ENV} to it, or use Docker with the runsc runtime installed"
        )


RUNTIME_HANDLERS = {"gvisor": "runsc"}  # RuntimeClass name -> its handler (manifests/base/runtimeclass-gvisor.yaml)
EMPTYDIR_MODE = "0777"  # how the kubelet creates an emptyDir


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: "2500m" -> 2.5, "4Gi" -> 4 * 2**30, "1G" -> 1e9."""
    q = str(value).strip()
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
                "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "m": 1e-3}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if q.endswith(suffix):
            number, factor = q[: -len(suffix)], suffixes[suffix]
            break
    else:
        number, factor = q, 1
    try:
        return float(number) * factor
    except ValueError:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 2, 2500m, 4Gi)") from None


def _unsupported(where: str, keys: set[str]) -> ValueError:
    return ValueError(
        f"the sandbox Job's {where} has {sorted(keys)}, which cure.sandbox.container.pod_to_container does not carry "
        "over to local sandbox containers; teach it those fields, so that local containers keep matching the Job"
    )


def pod_to_container(template: dict[str, Any], shard_dir: str, index: int, runtime: str | None = None) -> dict[str, Any]:
    """Docker SDK ``containers.create`` arguments that run completion ``index`` of a sandbox Job's pod ``template``.

    The translation is strict: a field it does not know raises, so that local containers cannot silently drift
    from the Job. The shard ConfigMaps become ``shard_dir`` mounted read-only; a memory emptyDir becomes a tmpfs of
    its size with the kubelet's mode 0777; the deny-all NetworkPolicy (which selects the pod's label) becomes no
    network at all; container settings override pod settings, as in Kubernetes.
    """
    pod = template["spec"]
    extra = set(pod) - {"runtimeClassName", "serviceAccountName", "priorityClassName", "restartPolicy",
                        "automountServiceAccountToken", "enableServiceLinks", "shareProcessNamespace",
                        "securityContext", "containers", "volumes"}
    if extra or pod.get("shareProcessNamespace") or pod.get("automountServiceAccountToken", True) \
            or pod.get("enableServiceLinks", True):
        raise _unsupported("pod spec", extra or {"shareProcessNamespace/automountServiceAccountToken/enableServiceLinks"})
    labels = template.get("metadata", {}).get("labels", {})
    if any(labels.get(k) != v for k, v in COMPONENT_LABEL.items()):
        raise ValueError(f"sandbox pods must carry {COMPONENT_LABEL} (the deny-all NetworkPolicy selects it)")
    (c,) = pod["containers"]
    extra = set(c) - {"name", "image", "imagePullPolicy", "command", "args", "env", "resources", "securityContext",
                      "volumeMounts"}
    if extra:
        raise _unsupported("container", extra)
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    extra = set(sc) - {"runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation", "readOnlyRootFilesystem",
                       "capabilities", "seccompProfile"}
    if extra or sc.get("seccompProfile", {}).get("type", "RuntimeDefault") != "RuntimeDefault" \
            or sc.get("allowPrivilegeEscalation", True):
        raise _unsupported("securityContext", extra or {"seccompProfile/allowPrivilegeEscalation"})
    if sc.get("runAsNonRoot") and sc.get("runAsUser") == 0:
        raise ValueError("the sandbox Job's securityContext asks for runAsNonRoot with runAsUser 0")
    volumes = {v["name"]: v for v in pod["volumes"]}
    binds: dict[str, dict[str, str]] = {}
    tmpfs: dict[str, str] = {}
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        if "projected" in v and m.get("readOnly") and all("configMap" in s for s in v["projected"]["sources"]):
            binds[shard_dir] = {"bind": m["mountPath"], "mode": "ro"}
        elif "emptyDir" in v and v["emptyDir"].get("medium") == "Memory" and not m.get("readOnly"):
            size = int(quantity(v["emptyDir"]["sizeLimit"]))
            tmpfs[m["mountPath"]] = f"rw,nosuid,nodev,size={size},mode={EMPTYDIR_MODE}"
        else:
            raise _unsupported(f"volume {m['name']!r}", set(v) - {"name"})
    limits = c["resources"]["limits"]
    caps = sc.get("capabilities", {})
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    return {
        "image": c["image"],
        "command": [*c["command"], *c.get("args", [])],
        "runtime": runtime or os.environ.get(RUNTIME_ENV) or RUNTIME_HANDLERS[pod["runtimeClassName"]],
        "user": f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}",
        "read_only": bool(sc.get("readOnlyRootFilesystem")),
        "cap_drop": list(caps.get("drop", [])),
        "cap_add": list(caps.get("add", [])),
        "security_opt": ["no-new-privileges"],
        "network_mode": "none",
        "environment": {**env, "JOB_COMPLETION_INDEX": str(index)},  # what an Indexed Job sets
        "volumes": binds,
        "tmpfs": tmpfs,
        "ulimits": [{"name": n, "soft": s, "hard": h} for n, (s, h) in ULIMITS.items()],
        # No pid limit, Kubernetes' default (podPidsLimit -1). gVisor's sentry backs program processes with host
        # threads: under a fork bomb at load ~10, podman's default of 2048 made clone fail in the sentry, which
        # panicked and took the shard with it. Programs stay bounded by the worker's RLIMIT_NPROC.
        "pids_limit": -1,
        "mem_limit": int(quantity(limits["memory"])),
        "nano_cpus": int(quantity(limits["cpu"]) * 1e9),
        "labels": {LABEL: "shard"},
        "detach": True,
    }


def container_spec(image: str, shard_dir: str, index: int, workers: int = 2, memory_mb: int = 1024,
                   output_limit: int = 1 << 20, wall_factor: float = 3.0, cpu: str = "2", memory: str = "4Gi",
                   tmp_size: str = "1Gi", runtime: str | None = None) -> dict[str, Any]:
    """Keyword arguments of the docker SDK's ``containers.create`` for shard ``index`` (pure; what tests check).

    Built from the cluster Job itself (:func:`cure.sandbox.k8s.build_job`, translated by :func:`pod_to_container`),
    so a local sandbox container runs the image exactly as a pod of the Job does.
    """
    job = build_job("cure-sandbox-local", index + 1, ["local-shards"], image=image, cpu=cpu, memory=memory,
                    workers=workers, memory_mb=memory_mb, tmp_size=tmp_size, output_limit_bytes=output_limit,
                    wall_factor=wall_factor)
    return pod_to_container(job["spec"]["template"], shard_dir, index, runtime)


def run_shards(rollouts: list[dict], shards: int = 1, image: str | None = None, client: Any = None,
               timeout_s: float = 3600.0, **spec: Any) -> list[dict]:
    """Execution records of ``rollouts``, run as ``shards`` sandbox containers in parallel, in input order."""
    import docker

    image = image or image_for("sandbox")
    client = client or sandbox_client()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeError(
            f"sandbox image {image} is not in the local engine; build it with `make images-local` "
            f"(its tag follows the code: rebuild after changing src/ or images/)"
        ) from None
    check_gvisor(client, image)
    parts = shard_rollouts(rollouts, shards)
    shared = os.environ.get(SHARED_DIR_ENV) or None
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cure-shards-", dir=shared) as tmp:
        os.chmod(tmp, 0o755)  # the mounted shards are read inside the container
        for i, part in enumerate(parts):
            path = Path(tmp) / f"shard-{i}.jsonl.gz"
            path.write_bytes(encode_records(part))
            path.chmod(0o644)
        name = f"cure-sandbox-{uuid.uuid4().hex[:10]}"
        results: list[list[dict] | None] = [None] * len(parts)
        errors: list[str] = []

        def one(i: int) -> None:
            c = client.containers.create(name=f"{name}-{i}", **container_spec(image, tmp, i, **spec))
            try:
                c.start()
                code = c.wait(timeout=timeout_s)["StatusCode"]
                out = c.logs(stdout=True, stderr=False).decode("utf-8", "replace")
                if code != 0:
                    err = c.logs(stdout=False, stderr=True).decode("utf-8", "replace")
                    errors.append(f"shard {i} (container {name}-{i}) exited {code}: {err[-2000:]}")
                    return
                results[i] = parse_results_block(out)
            except Exception as e:  # reported below with the shard it belongs to
                errors.append(f"shard {i} (container {name}-{i}): {e}")
            finally:
                try:
                    c.remove(force=True)
                except docker.errors.APIError:
                    pass

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(parts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("sandbox containers failed: " + "; ".join(errors))
        log.info("ran %d sandbox containers of %s in %.1fs", len(parts), image, time.monotonic() - t0)
    # merge back in the order of the input (shard_rollouts splits round-robin)
    merged: list[dict] = [{}] * len(rollouts)
    for i, recs in enumerate(results):
        assert recs is not None
        merged[i :: len(parts)] = recs
    return merged
