"""Forward this machine's pip configuration into image builds (a package mirror, its CA, local wheel folders).

    python3 scripts/host_pip_config.py DIR   ->  prints one `podman build` option per line

Behind a package mirror with its own CA, pip inside a build fails certificate verification or cannot find the
index unless it sees the same configuration as the host. This reads the effective configuration the way pip
does (`pip config list`: the global, user and site files and the PIP_* environment variables, later ones
winning), writes it merged into DIR/pip.conf, and prints the options a build needs: DIR mounted read-only at
/mnt/host-pip/conf with PIP_CONFIG_FILE pointing there (a build argument the Dockerfiles declare in every stage that
runs pip), and, each at /mnt/host-pip/N with the configuration rewritten to match, every local file or folder a
setting names (the CA bundle,
constraint files, find-links folders, file:// indexes with
the folder above them, where mirrors keep the files their pages link to). Nothing of it is copied into an image layer: build-time
mounts are not committed. What stays is an empty /mnt/host-pip tree: the engine leaves its mount points behind, and
keeping them there, instead of at the host's paths, keeps the images free of host-named placeholders.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip settings whose values are local paths or URLs that may point at local folders
_PATH_KEYS = {"cert", "client-cert", "constraint", "requirement", "find-links", "index-url", "extra-index-url"}


def effective_config(python: str = sys.executable) -> dict[str, dict[str, str]]:
    """{section: {key: value}} as pip resolves it on this machine (environment variables go to [global])."""
    proc = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"host_pip_config: `{python} -m pip config list` failed: {proc.stderr.strip()}")
    files: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, sep, raw = line.partition("=")
        if not sep:
            continue
        value = raw.strip().strip("'\"")
        section, _, key = name.rpartition(".")
        if section == ":env:":
            env[key] = value
        else:
            files.setdefault(section, {})[key] = value
    files.setdefault("global", {}).update(env)
    return files


def local_paths(cfg: dict[str, dict[str, str]]) -> list[Path]:
    """Existing local files/folders the configuration names (deduplicated, parents before children dropped)."""
    found: set[Path] = set()
    for section in cfg.values():
        for key, value in section.items():
            if key not in _PATH_KEYS:
                continue
            for item in value.split():
                path = item[len("file://"):] if item.startswith("file://") else item
                if not (path.startswith("/") and Path(path).exists()):
                    continue
                # a file:// index (.../simple) usually links its files relatively (../../files/...): mount its parent
                found.add(Path(path).resolve().parent if key.endswith("index-url") else Path(path).resolve())
    keep: list[Path] = []
    for path in sorted(found):
        if not any(parent in keep for parent in path.parents):
            keep.append(path)
    return keep


MOUNT = "/mnt/host-pip"


def relocate(cfg: dict[str, dict[str, str]], paths: list[Path]) -> tuple[dict[str, dict[str, str]], dict[Path, str]]:
    """The configuration with every local path moved under :data:`MOUNT` (one mount each), and those mounts."""
    targets = {p: f"{MOUNT}/{i}" for i, p in enumerate(paths)}
    out: dict[str, dict[str, str]] = {}
    for section, values in cfg.items():
        out[section] = {}
        for key, value in values.items():
            if key in _PATH_KEYS:
                items = []
                for item in value.split():
                    scheme = "file://" if item.startswith("file://") else ""
                    path = item[len(scheme):]
                    for src in sorted(targets, key=lambda p: -len(str(p))):
                        if path == str(src) or path.startswith(f"{src}/"):
                            path = targets[src] + path[len(str(src)):]
                            break
                    items.append(scheme + path)
                value = " ".join(items)
            out[section][key] = value
    return out, targets


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cfg = effective_config(os.environ.get("PIP_PYTHON", sys.executable))
    paths = local_paths(cfg)
    moved, targets = relocate(cfg, paths)
    parser = configparser.ConfigParser(interpolation=None)
    for section, values in moved.items():
        parser[section] = values
    with (out / "pip.conf").open("w") as f:
        parser.write(f)
    print(f"--volume={out.resolve()}:{MOUNT}/conf:ro")
    print(f"--build-arg=PIP_CONFIG_FILE={MOUNT}/conf/pip.conf")
    for src, dst in targets.items():
        print(f"--volume={src}:{dst}:ro")
    print(f"host_pip_config: forwarding {out / 'pip.conf'} ({', '.join(shlex.quote(str(p)) for p in paths) or 'no local paths'})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
