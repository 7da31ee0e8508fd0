"""gVisor (``runsc``) on one machine: find it, and write the OCI bundle that runs the worker inside it.

Why ``runsc run`` with a bundle rather than ``runsc do``: ``do`` does not pass a piped stdin through, and the
worker is driven over its stdin. The bundle's root filesystem is an empty read-only directory; into it are
bind-mounted, read-only, only what a Python program needs: ``/usr`` (libc and friends), the Python installation
that runs the worker, the folder holding ``worker.py``, and the files of the packages programs may import
(:data:`PROGRAM_PACKAGES`: numpy, pandas, scipy and what they need, each mounted alone under ``/opt/cure-lib``, so
that nothing else of the host's environment is visible). ``/tmp`` is a tmpfs private to the sandbox (the only
writable place), there is no network (``--network=none``), and the environment is a fixed minimal one. Nothing of
the host's home, work tree, credentials or /etc is visible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

WORKER_DIR = Path(__file__).resolve().parent
MOUNT_WORKER = "/opt/cure-sandbox"
MOUNT_LIB = "/opt/cure-lib"
# The third-party packages a program may import, as in the reference (its programs run in its own Python, whose
# requirements hold these three). The worker preloads numpy (see worker.PRELOAD_PACKAGES).
PROGRAM_PACKAGES = ("numpy", "pandas", "scipy")
# One thread per numerical library: a program is one process with one CPU's worth of time, and a thread pool
# started at import would outlive the fork of each program's process.
THREADS_ENV = ["OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"]
SANDBOX_ENV = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp", "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1",
               *THREADS_ENV, f"PYTHONPATH={MOUNT_LIB}"]
# The worker is pid 1 and root inside the sandbox (gVisor's own user namespace), with just enough capabilities
# to hand each program an unprivileged uid, its temp dir, and to kill what the program leaves behind.
CAPS = ["CAP_KILL", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"]


class GVisorUnavailable(RuntimeError):
    """gVisor isolation was asked for but cannot be used here."""


def find_runsc() -> str:
    """Path of ``runsc``, or raise saying how to install it."""
    path = shutil.which("runsc")
    if path is None:
        raise GVisorUnavailable(
            "gVisor isolation requested but `runsc` is not on PATH. Install it (Debian/Ubuntu: "
            "`apt-get install runsc`, or run `make system-deps`), or pass `--isolation none` for development "
            "only (untrusted code then runs unisolated)."
        )
    if os.geteuid() != 0:
        raise GVisorUnavailable(
            "`runsc run` needs root on this machine (it creates namespaces for the sandbox); run as root, or use "
            "the cluster path (pods with runtimeClassName gvisor)."
        )
    return path


def _requirement_name(req: str) -> str | None:
    """The distribution a requirement line needs, or None when only an extra needs it."""
    name, _, marker = req.partition(";")
    if "extra" in marker:
        return None
    match = re.match(r"[A-Za-z0-9._-]+", name.strip())
    return match.group(0) if match else None


def program_package_paths(names: tuple[str, ...] = PROGRAM_PACKAGES) -> list[Path]:
    """The top-level files and folders (``numpy/``, ``numpy.libs/``, ``six.py``...) of the installed distributions
    ``names`` and of everything they require, as this Python sees them. Distributions not installed are left out
    (programs then cannot import them either)."""
    from importlib import metadata

    seen: set[str] = set()
    paths: dict[str, Path] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or ():
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".pth")):
                continue
            paths.setdefault(top, Path(str(dist.locate_file(top))))
        todo += [n for n in map(_requirement_name, dist.requires or ()) if n]
    return [p for _, p in sorted(paths.items()) if p.exists()]


def link_packages(folder: Path, paths: list[Path]) -> Path:
    """A folder of symbolic links to ``paths`` (for a worker without a mount namespace: ``--isolation none``)."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    for p in paths:
        link = folder / p.name
        if not link.is_symlink():
            link.symlink_to(p)
    return folder


def python_home() -> Path:
    """The Python installation that runs the worker (the venv's base interpreter: the stdlib, no site-packages)."""
    return Path(sys.base_prefix).resolve()


def python_executable() -> str:
    home = python_home()
    exe = home / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(exe if exe.exists() else home / "bin" / "python3")


def worker_argv() -> list[str]:
    """How the worker is started: bare Python, no site-packages, no bytecode writes."""
    return [python_executable(), "-s", "-S", "-B", f"{MOUNT_WORKER}/worker.py"]


def write_bundle(bundle: Path, tmp_mb: int = 256) -> Path:
    """Write an OCI bundle (config.json + empty rootfs) under ``bundle`` and return it."""
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    home = python_home()
    binds = [("/usr", "/usr"), (str(home), str(home)), (str(WORKER_DIR), MOUNT_WORKER)]
    binds += [(str(p), f"{MOUNT_LIB}/{p.name}") for p in program_package_paths()]
    mounts: list[dict] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", f"size={tmp_mb}m", "mode=755"]},
    ]
    for src, dst in binds:
        target = rootfs / dst.lstrip("/")
        if Path(src).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:  # a single-file module (six.py): the mount point is a file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        mounts.append({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid", "nodev"]})
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        if not (rootfs / link).is_symlink():
            (rootfs / link).symlink_to(target)
    (rootfs / "tmp").mkdir(exist_ok=True)
    spec = {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": worker_argv(),
            "env": SANDBOX_ENV,
            "cwd": "/tmp",
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")} | {"inheritable": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sandbox",
        "mounts": mounts,
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
    }
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def runsc_argv(runsc: str, state_root: Path, bundle: Path, container_id: str) -> list[str]:
    return [
        runsc,
        "--network=none",
        "--platform=ptrace",
        f"--root={state_root}",
        "run",
        f"--bundle={bundle}",
        container_id,
    ]
