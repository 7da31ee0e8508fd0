"""Container images of the pipeline: one registry and one tag for all four image families.

Every component and every Kubernetes Job builder asks :func:`image_for` for its image, so retargeting the whole
pipeline to another registry or release is two environment variables, read at call time (compile time for a
KFP pipeline, run time for a Job builder):

- ``CURE_IMAGE_REGISTRY`` (default ``ghcr.io/cure-kfp``): where ``make images`` pushes and the cluster pulls;
- ``CURE_IMAGE_TAG`` (default: the ``cure`` package version): the release of the images.

Image ``F`` is ``{registry}/cure-{F}:{tag}`` and is built from ``images/F/Dockerfile`` (``scripts/build-images.sh``).
This module uses only the standard library so the build script can import it without installing the package.
"""

from __future__ import annotations

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
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    raise ImageConfigError(
        f"cannot tell the cure version (package not installed, no version in {pyproject}); set {TAG_ENV}"
    )


def registry() -> str:
    """The image registry/prefix: ``$CURE_IMAGE_REGISTRY`` or :data:`DEFAULT_REGISTRY`, without a trailing /."""
    value = os.environ.get(REGISTRY_ENV, "").strip().rstrip("/") or DEFAULT_REGISTRY
    if not _REGISTRY_RE.match(value):
        raise ImageConfigError(
            f"{REGISTRY_ENV}={value!r} is not a valid image registry/prefix; expected e.g. "
            f"'ghcr.io/my-org' or 'registry.example.com:5000/cure' (lowercase path, no tag)"
        )
    return value


def tag() -> str:
    """The image tag: ``$CURE_IMAGE_TAG`` or the cure package version."""
    value = os.environ.get(TAG_ENV, "").strip() or _package_version()
    if not _TAG_RE.match(value):
        raise ImageConfigError(
            f"{TAG_ENV}={value!r} is not a valid image tag; use letters, digits, '_', '.', '-' "
            f"(at most 128, not starting with '.' or '-'), e.g. 0.1.0 or 2026-11-27"
        )
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
