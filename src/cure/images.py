"""Container images of the pipeline: one registry and one tag for all four image families.

Every component and every Kubernetes Job builder asks :func:`image_for` for its image, so retargeting the whole
pipeline to another registry or release is two environment variables, read at call time (compile time for a
KFP pipeline, run time for a Job builder):

- ``CURE_IMAGE_REGISTRY`` (default ``ghcr.io/cure-kfp``): where ``make images`` pushes and the cluster pulls;
- ``CURE_IMAGE_TAG`` (default: derived from the code, below): the release of the images.

Image ``F`` is ``{registry}/cure-{F}:{tag}`` and is built from ``images/F/Dockerfile`` (``scripts/build-images.sh``).

**Tags follow the code.** In a source checkout the default tag is ``{version}-{digest}``: the package version and
the first 12 hex digits of a SHA-256 over every file the images are built from (``pyproject.toml``, ``setup.py``,
``src/``, ``pipelines/``, ``components/``, ``images/``; README.md is left out: it is only package metadata in an image,
and an edit to it should not force a rebuild). Changed code gets a new tag, so a cluster that pulls ``IfNotPresent`` (:func:`pull_policy`, the
default, also Kubernetes' default for KFP's task pods) can never run a stale image under a re-used tag, and
unchanged code keeps its tag, so nothing is rebuilt or pulled for a commit that did not touch the images. A dirty
work tree gets its own digest (a git SHA would not). Each image carries its own name (``ENV CURE_IMAGE_REGISTRY``
and ``CURE_IMAGE_TAG``, set by the build), so code inside an image (the execute launcher naming the sandbox image)
resolves to images of the same build. Installed without a checkout and outside an image, the tag is the version.
Setting ``CURE_IMAGE_TAG`` to a moving tag (``dev``) needs ``CURE_IMAGE_PULL_POLICY=Always``.

This module uses only the standard library so the build script can import it without installing the package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
import sys
from pathlib import Path

#: Image families. cpu: prepare data, reward, metrics, the execute launcher; rollout: vLLM sampling (GPU);
#: train: PyTorch + DeepSpeed (GPU); sandbox: the code-running worker under gVisor.
FAMILIES: tuple[str, ...] = ("cpu", "rollout", "train", "sandbox")

DEFAULT_REGISTRY = "ghcr.io/cure-kfp"
REGISTRY_ENV = "CURE_IMAGE_REGISTRY"
TAG_ENV = "CURE_IMAGE_TAG"
PULL_POLICY_ENV = "CURE_IMAGE_PULL_POLICY"
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
_ROOT = Path(__file__).resolve().parents[2]
# What the images are built from (the build context that .dockerignore lets through, plus the Dockerfiles).
_DIGEST_INPUTS = ("pyproject.toml", "setup.py", "src", "pipelines", "components", "images")
_DIGEST_SKIP = ("__pycache__", ".egg-info", ".pyc", ".pyo")

# Docker reference grammar (distribution/reference): registry host[:port] then lowercase path components.
_REGISTRY_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?)"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageConfigError(ValueError):
    """The image registry, tag or family is invalid; the message says which and what to do."""


def _package_version() -> str:
    """The installed ``cure`` version, or the repo checkout's pyproject version when it is not installed."""
    try:
        return importlib.metadata.version("cure")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = _ROOT / "pyproject.toml"
    if pyproject.is_file():
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    raise ImageConfigError(
        f"cannot tell the cure version (package not installed, no version in {pyproject}); set {TAG_ENV}"
    )


@functools.lru_cache(maxsize=1)
def code_digest(root: Path = _ROOT) -> str | None:
    """First 12 hex digits of SHA-256 over the image inputs of the checkout at ``root`` (None outside a checkout).

    Paths and contents both count, in sorted order, so a renamed, added or removed file changes the digest.
    """
    if not (root / "pyproject.toml").is_file() or not (root / "images").is_dir():
        return None
    h = hashlib.sha256()
    for top in _DIGEST_INPUTS:
        base = root / top
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(root).as_posix()
            if any(part.endswith(_DIGEST_SKIP) for part in rel.split("/")):
                continue
            data = path.read_bytes()
            h.update(f"{rel}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()[:12]


def registry() -> str:
    """The image registry/prefix: ``$CURE_IMAGE_REGISTRY`` or :data:`DEFAULT_REGISTRY`, without a trailing /."""
    value = os.environ.get(REGISTRY_ENV, "").strip().rstrip("/") or DEFAULT_REGISTRY
    if not _REGISTRY_RE.match(value):
        raise ImageConfigError(
            f"{REGISTRY_ENV}={value!r} is not a valid image registry/prefix; expected e.g. "
            f"'ghcr.io/my-org' or 'registry.example.com:5000/cure' (lowercase path, no tag)"
        )
    return value


def default_tag() -> str:
    """``{version}-{digest}`` in a source checkout, else the package version (see the module docstring)."""
    digest = code_digest()
    return f"{_package_version()}-{digest}" if digest else _package_version()


def tag() -> str:
    """The image tag: ``$CURE_IMAGE_TAG`` or :func:`default_tag`."""
    value = os.environ.get(TAG_ENV, "").strip() or default_tag()
    if not _TAG_RE.match(value):
        raise ImageConfigError(
            f"{TAG_ENV}={value!r} is not a valid image tag; use letters, digits, '_', '.', '-' "
            f"(at most 128, not starting with '.' or '-'), e.g. 0.1.0 or 2026-11-27"
        )
    return value


def pull_policy() -> str:
    """Kubernetes ``imagePullPolicy`` for the images: ``$CURE_IMAGE_PULL_POLICY`` or ``IfNotPresent``."""
    value = os.environ.get(PULL_POLICY_ENV, "").strip() or "IfNotPresent"
    if value not in PULL_POLICIES:
        raise ImageConfigError(f"{PULL_POLICY_ENV}={value!r}: expected one of {', '.join(PULL_POLICIES)}")
    return value


def image_for(family: str) -> str:
    """The full image reference of one family, e.g. ``ghcr.io/cure-kfp/cure-train:0.1.0``."""
    if family not in FAMILIES:
        raise ImageConfigError(
            f"unknown image family {family!r}; expected one of {', '.join(FAMILIES)} "
            f"(each has a Dockerfile in images/<family>/)"
        )
    return f"{registry()}/cure-{family}:{tag()}"


def all_images() -> dict[str, str]:
    """Family -> image reference, for every family (what ``make images`` builds and pushes)."""
    return {family: image_for(family) for family in FAMILIES}


def main() -> int:
    """Print ``family image`` lines (what scripts/build-images.sh reads); exit 2 with the reason on bad config."""
    try:
        images = all_images()
    except ImageConfigError as e:
        print(f"cure.images: {e}", file=sys.stderr)
        return 2
    for name, ref in images.items():
        print(name, ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
