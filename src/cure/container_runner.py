"""``cure run --runner docker``: every component of the local pipeline in its own image, through ``kfp.local.DockerRunner``.

The images are the ones the compiled pipeline names (:func:`cure.images.image_for`), built on this machine by
``make images-local``; the engine is anything that serves the Docker API: Docker, or podman's
``podman system service`` (``scripts/container-engine.sh service``; ``DOCKER_HOST`` defaults to its socket).

What each component container gets, and why:

- the run folder, mounted at the same path: KFP's outputs (it mounts ``pipeline_root`` itself) and the ``file://``
  store, so the host reads history and report as after a subprocess run;
- ``$CURE_CACHE`` read-only: the offline tiny model, built on the host before the run (as a cluster would pull base
  weights from a hub or bucket, not build them inside a task);
- the engine's sockets (the sandbox one too, :mod:`cure.sandbox.container`): the execute stage (and evaluation's sandbox) start sandbox-image containers under ``runsc``
  next to themselves (``execute.backend=container``, :mod:`cure.sandbox.container`), as the cluster launcher
  starts a gVisor Job; shards travel through ``<run>/sandbox``, a folder at the same path on both sides;
- no network (``network_mode=none``): every input is local, which is also what proves the run offline;
- uid 0 in the container (the images run as 10001 in a cluster), so that it can write the root-owned run folder
  and use the engine socket; the sandbox containers run as the cluster Job's pods do (:mod:`cure.sandbox.container`);
- ulimits inside the machine's hard limits (``DockerRunner(ulimits=...)``; processes here lack CAP_SYS_RESOURCE).

**Why this module replaces kfp's ``run_docker_container``.** kfp 2.17.3 starts every task container with
``auto_remove=True``, streams its log, then asks for its exit status. Once the container exits the engine removes
it, racing that status request: Docker answers 404 (kfp then assumes exit code 0, so a failed task can pass as
a success), podman 4.3 answers 500 (kfp raises and the run fails although the task succeeded). The replacement
creates the container without auto-remove, streams its log, reads its real exit status and removes it itself;
nothing races and every exit code is the task's own. kfp hard-codes ``auto_remove=True`` next to the runner's
arguments (passing ``auto_remove`` to ``DockerRunner`` is a duplicate keyword), hence the module-level replacement,
installed only while a docker run is set up here and checked against the kfp function it replaces.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

from cure.images import FAMILIES, image_for
from cure.sandbox.container import sandbox_host
from cure.tiny import tiny_model

log = logging.getLogger(__name__)

PODMAN_SOCKET = "/run/podman/podman.sock"
ULIMITS = {"nofile": (1024, 4096), "nproc": (1024, 4096)}


class ContainerRunnerError(RuntimeError):
    """The container engine or an image is missing; the message says what to run."""


def engine_client() -> Any:
    """A docker SDK client for ``$DOCKER_HOST``, defaulting to podman's socket when it exists; checks it answers."""
    import docker

    if not os.environ.get("DOCKER_HOST") and Path(PODMAN_SOCKET).is_socket():
        os.environ["DOCKER_HOST"] = f"unix://{PODMAN_SOCKET}"
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:
        raise ContainerRunnerError(
            f"no container engine answers at DOCKER_HOST={os.environ.get('DOCKER_HOST', '(unset)')}: {e}. "
            f"Start one: `bash scripts/container-engine.sh` (podman; serves {PODMAN_SOCKET}), or point DOCKER_HOST at Docker."
        ) from None
    return client


def missing_images(client: Any) -> list[str]:
    """Image references the pipeline needs that the engine does not have."""
    import docker

    missing = []
    for family in FAMILIES:
        try:
            client.images.get(image_for(family))
        except docker.errors.ImageNotFound:
            missing.append(image_for(family))
    return missing


def _run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any) -> int:
    """kfp's ``run_docker_container`` without auto-remove: stream the log, return the real exit status, then remove."""
    run_args.pop("auto_remove", None)
    for key in ("detach", "stdout", "stderr"):
        run_args.pop(key, None)
    env = {**_EXTRA_ENV, **(run_args.pop("environment", None) or {})}
    container = client.containers.run(image=image, command=command, volumes=volumes, environment=env, detach=True,
                                      stdout=True, stderr=True, auto_remove=False, **run_args)
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode("utf-8", "replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


_EXTRA_ENV: dict[str, str] = {}


def _install_run_replacement() -> None:
    from kfp.local import docker_task_handler

    current = docker_task_handler.run_docker_container
    if current is _run_container:
        return
    params = list(inspect.signature(current).parameters)
    if params[:4] != ["client", "image", "command", "volumes"]:
        raise ContainerRunnerError(
            f"kfp.local.docker_task_handler.run_docker_container has an unexpected signature {params}; "
            "cure.container_runner was written against kfp 2.17.3: check whether the auto-remove race is fixed there"
        )
    docker_task_handler.run_docker_container = _run_container


def docker_runner(run_dir: Path, cache_dir: Path) -> Any:
    """The ``kfp.local.DockerRunner`` for a run in ``run_dir``; raises ContainerRunnerError when it cannot work."""
    import docker
    from kfp import local

    client = engine_client()
    missing = missing_images(client)
    if missing:
        raise ContainerRunnerError(
            f"images missing from the engine: {', '.join(missing)}. Build them with `make images-local` "
            f"(tags follow the code: rebuild after changing src/ or images/)."
        )

    socket = os.environ["DOCKER_HOST"].removeprefix("unix://")
    sandbox_socket = sandbox_host().removeprefix("unix://")
    if not Path(sandbox_socket).is_socket():
        raise ContainerRunnerError(f"no sandbox engine socket at {sandbox_socket}; run `bash scripts/container-engine.sh service`")
    sandbox_dir = run_dir / "sandbox"
    sandbox_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _EXTRA_ENV.clear()
    _EXTRA_ENV.update({
        "DOCKER_HOST": f"unix://{socket}",
        "CURE_SANDBOX_DOCKER_HOST": f"unix://{sandbox_socket}",
        "CURE_CACHE": str(cache_dir),
        "CURE_SANDBOX_SHARED_DIR": str(sandbox_dir),
        "HF_HUB_OFFLINE": "1",
    })
    _install_run_replacement()
    mounts = [
        docker.types.Mount(str(run_dir), str(run_dir), type="bind"),
        docker.types.Mount(str(cache_dir), str(cache_dir), type="bind", read_only=True),
        docker.types.Mount(socket, socket, type="bind"),
        docker.types.Mount(sandbox_socket, sandbox_socket, type="bind"),
    ]
    return local.DockerRunner(
        user="0:0",
        network_mode="none",
        mounts=mounts,
        ulimits=[docker.types.Ulimit(name=n, soft=s, hard=h) for n, (s, h) in ULIMITS.items()],
    )


RUNNERS = ("subprocess", "docker")
#: Config overrides a docker run adds: sandboxes as sandbox-image containers, one shard (two workers) per stage.
DOCKER_OVERRIDES = ["execute.backend=container", "execute.shards=1"]


def make_runner(kind: str, run_dir: Path, base_model: str) -> Any:
    """The kfp.local runner for ``cure run --runner KIND``."""
    from kfp import local

    if kind == "subprocess":
        return local.SubprocessRunner(use_venv=False)
    if kind != "docker":
        raise ValueError(f"unknown runner {kind!r}; expected one of {', '.join(RUNNERS)}")
    cache = Path(os.environ.get("CURE_CACHE", Path.home() / ".cache" / "cure"))
    runner = docker_runner(run_dir, cache)
    prepare_base_model(base_model, cache)
    return runner


def prepare_base_model(base_model: str, cache_dir: Path) -> None:
    """Build the offline tiny model on the host (once; cached), so that the containers only read it (``tiny:0`` is
    shipped in the package, so the images hold it)."""
    if not base_model.startswith("tiny"):
        return

    tiny_model(base_model, cache_dir)
