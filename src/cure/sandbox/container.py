"""Sandbox shards as containers of the sandbox image on a local engine, set up as the cluster Job sets up its pods.

The cluster runs each shard in a pod of ``cure-sandbox`` under ``runtimeClassName: gvisor`` (:mod:`cure.sandbox.k8s`).
This backend (``execute.backend=container``) runs the same image and entrypoint through the Docker API (Docker, or
podman's ``podman system service``) with the same confinement:

- gVisor as the runtime: Docker honours ``runtime=runsc``; podman's Docker API ignores the field, so
  scripts/container-engine.sh serves a second socket, ``/run/podman/sandbox.sock``, whose default runtime is runsc
  (without a network stack). ``$CURE_SANDBOX_DOCKER_HOST`` names it (default: that socket when it exists, else
  ``$DOCKER_HOST``), and every launcher first checks that a container there really runs on gVisor's kernel;
- uid/gid 10001, every capability dropped, ``no-new-privileges``, a read-only root filesystem;
- no network (``network_mode=none``), no environment beyond what the pod spec sets, no credentials;
- the shard file in ``/shard``, mounted read-only (a ConfigMap in the cluster); ``/tmp`` a private tmpfs;
- ``python -m cure.sandbox.shard`` as the command; results come back through the container log between the same
  marker lines the cluster launcher reads.

**Two privilege settings.** The cluster Job's (``worker_root=False``): uid 10001 without capabilities. There the
worker cannot give programs a uid of their own, so a program shares its uid with the worker and the shard process:
it can kill them (the shard container, or pod, then fails: one program can fail a whole execute stage), write
``/tmp``, and leave processes behind that the worker cannot kill (tests/test_containers.py measures this against
the adversarial suite: 6 of its 21 programs get through). ``worker_root=True`` runs the worker as root *inside
gVisor* (the sentry's root, not the host's) with only the six capabilities the single-machine sandbox gives it
(:data:`cure.sandbox.gvisor.CAPS`, all within Pod Security "baseline"), so each program runs as ``nobody`` and the
worker kills whatever it leaves (every process of that uid: the worker is not pid 1 here, so orphans that leave
its subreaper tree are found by uid); the whole suite is contained. ``cure run --runner docker`` uses it.

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

from cure.sandbox.k8s import shard_rollouts
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


def container_spec(image: str, shard_dir: str, index: int, workers: int = 2, memory_mb: int = 1024,
                   output_limit: int = 1 << 20, wall_factor: float = 3.0, cpus: float = 2.0,
                   memory_limit: str = "4g", tmp_size: str = "1g", runtime: str | None = None,
                   worker_root: bool = False) -> dict[str, Any]:
    """Keyword arguments of the docker SDK's ``containers.create`` for shard ``index`` (pure; what tests check).

    ``worker_root``: run the worker as root *inside gVisor* with only the capabilities it needs to hand each
    program an unprivileged uid and clean up after it (:data:`cure.sandbox.gvisor.CAPS`, as the single-machine
    sandbox does), instead of the cluster pod's uid 10001 without capabilities (see the README's sandbox notes).
    """
    from cure.sandbox.gvisor import CAPS

    spec = {
        "image": image,
        "command": ["python", "-m", "cure.sandbox.shard", "--dir", "/shard", "--index", str(index),
                    "--workers", str(workers), "--memory-mb", str(memory_mb),
                    "--output-limit", str(output_limit), "--wall-factor", str(wall_factor)],
        "runtime": runtime or os.environ.get(RUNTIME_ENV, "runsc"),
        "user": "10001:10001",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network_mode": "none",
        "environment": {"CURE_SANDBOX_OUTER": "gvisor-container", "HOME": "/tmp"},
        "volumes": {shard_dir: {"bind": "/shard", "mode": "ro"}},
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_size},mode=1777"},
        "ulimits": [{"name": n, "soft": s, "hard": h} for n, (s, h) in ULIMITS.items()],
        "mem_limit": memory_limit,
        "nano_cpus": int(cpus * 1e9),
        "labels": {LABEL: "shard"},
        "detach": True,
    }
    if worker_root:
        spec.update(user="0:0", cap_add=[c.removeprefix("CAP_") for c in CAPS],
                    tmpfs={"/tmp": f"rw,nosuid,nodev,size={tmp_size},mode=755"})
    return spec


def run_shards(rollouts: list[dict], shards: int = 1, image: str | None = None, client: Any = None,
               timeout_s: float = 3600.0, **spec: Any) -> list[dict]:
    """Execution records of ``rollouts``, run as ``shards`` sandbox containers in parallel, in input order."""
    import docker

    from cure.images import image_for

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
        os.chmod(tmp, 0o755)  # uid 10001 reads the mounted shards
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
