"""The store's protocol: keys, checksums, errors, and checkpoints built on a backend's object operations.

:class:`Store` is what every backend implements (:mod:`cure.store.folder`, :mod:`cure.store.s3`): the primitive
object operations, abstract here, and on top of them the checkpoint protocol (files, then the manifest, then the
experiment's ``latest`` pointer; every read verified against its sha256). See :mod:`cure.store` for the rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

from cure.validate import current_umask

log = logging.getLogger(__name__)

T = TypeVar("T")

MANIFEST_NAME = "cure-manifest.json"
LATEST_NAME = "latest"
MANIFEST_FORMAT = 1
_TMP_MARK = ".cure-tmp-"
_SUM_SUFFIX = ".cure-sha256"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StoreError(RuntimeError):
    """A store operation failed. The message names the object and says what to do."""


class ObjectNotFound(StoreError, FileNotFoundError):
    """The object (or checkpoint) does not exist."""


class StoreUnavailable(StoreError):
    """The store could not be reached (retries exhausted): nothing is known about the object."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object was created, changed or deleted since it was read."""


class ChecksumMismatch(StoreError):
    """A downloaded object's sha256 differs from the one recorded when it was written."""

    def __init__(self, where: str, expected: str, actual: str):
        self.where, self.expected, self.actual = where, expected, actual
        super().__init__(
            f"checksum mismatch for {where}: expected sha256 {expected}, got {actual}; the stored object is "
            "corrupted or was overwritten outside the store. Re-upload it or fetch another checkpoint."
        )


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by its name as text (JSON has no NaN or infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """Normalise a key (strip surrounding ``/``) and refuse ones that could escape the store root."""
    if not isinstance(key, str):
        raise TypeError(f"store key must be a string, got {type(key).__name__}")
    k = key.strip("/")
    if not k:
        if allow_empty:
            return ""
        raise ValueError(f"store key {key!r} is empty")
    parts = k.split("/")
    if (
        "\\" in k
        or any(p in ("", ".", "..") for p in parts)
        or any(_TMP_MARK in p or p.endswith(_SUM_SUFFIX) for p in parts)
    ):
        raise ValueError(
            f"store key {key!r} is invalid: use '/'-separated names without empty, '.' or '..' parts or backslashes"
        )
    return k


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} is invalid: use letters, digits, '.', '_' and '-' (no '/')")
    return name


def _local_files(local_dir: Path) -> list[tuple[str, Path]]:
    """(relative key, path) for every file under a folder, sorted; symlinks are followed."""
    if not local_dir.is_dir():
        raise StoreError(f"{local_dir} is not a folder: nothing to upload")
    out = []
    for root, dirs, files in os.walk(local_dir, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            out.append((p.relative_to(local_dir).as_posix(), p))
    return out


def _check_manifest(manifest: dict[str, Any], name: str, where: str) -> None:
    """A manifest names its checkpoint and lists relative paths, each with a sha256 and a size."""
    if manifest.get("name") != name:
        raise StoreError(f"{where}: manifest names checkpoint {manifest.get('name')!r}, expected {name!r}")
    for rel, entry in manifest["files"].items():
        try:
            confined = isinstance(rel, str) and check_key(rel) == rel and not rel.startswith("/")
        except ValueError:
            confined = False
        if not confined or rel == MANIFEST_NAME:
            raise StoreError(
                f"{where}: file path {rel!r} is not a plain relative path inside the checkpoint (absolute paths, "
                "'..', '.', empty parts and backslashes are refused); the manifest is corrupt or hostile"
            )
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA_RE.match(entry["sha256"])
                and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool)
                and entry["size"] >= 0):
            raise StoreError(f"{where}: entry for {rel!r} needs a 64-hex 'sha256' and a non-negative 'size'")


def _no_checksum(where: str) -> StoreError:
    return StoreError(
        f"{where} has no recorded sha256 (it was not written through the store, or its checksum was removed); "
        "refusing to return unverified data: write it again through the store"
    )


class _HashingWriter:
    """Writes to a temporary file beside the destination, hashing as it goes; :meth:`commit` renames it."""

    def __init__(self, dest: Path):
        self.dest = dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}{_TMP_MARK}", dir=dest.parent)
        self.tmp = Path(tmp)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def commit(self, where: str, expected_sha256: str | None) -> Path:
        self.file.close()
        actual = self.sha.hexdigest()
        if expected_sha256 and actual != expected_sha256:
            self.discard()
            raise ChecksumMismatch(where, expected_sha256, actual)

        os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a stored or fetched file gets the usual mode
        os.replace(self.tmp, self.dest)
        return self.dest

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class Store(ABC):
    """One artifact store. Backends implement the primitive object operations; checkpoints build on them."""

    uri: str

    # ---- primitives -------------------------------------------------------------------------------------
    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> str:
        """Upload a file to ``key`` (replacing it); returns its sha256."""

    @abstractmethod
    def get_file(self, key: str, path: str | Path, sha256: str | None = None) -> Path:
        """Download ``key`` to ``path`` atomically, verifying ``sha256`` (or the one stored with the object)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` to ``key`` (replacing it); returns its sha256."""

    @abstractmethod
    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        """Read ``key``; verified like :meth:`get_file`."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (a folder; ``""`` is the whole store), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing object is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many."""

    @abstractmethod
    def describe(self, key: str) -> str:
        """The object's full address (``s3://bucket/key`` or a path), for messages."""

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """``(data, version tag)`` of ``key`` (verified like :meth:`get_bytes`), or None when it does not exist."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, version: str | None) -> None:
        """Write ``data`` to ``key`` only if ``key`` is still at ``version`` (from :meth:`get_versioned`), or with
        ``version=None`` only if it does not exist; else raise :class:`PreconditionFailed`. The check and the write
        are one atomic step (an S3 conditional PUT; an exclusive lock on the folder)."""

    # ---- derived ----------------------------------------------------------------------------------------
    def put_json(self, key: str, obj: Any) -> str:
        """Standard JSON: a NaN or infinity is written as the text ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
        return self.put_bytes(key, (json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.describe(key)} is not valid JSON: {e}") from e

    def put_dir(self, prefix: str, local_dir: str | Path) -> list[str]:
        """Upload every file under ``local_dir`` to ``prefix/<relative path>``; returns the keys."""
        prefix = check_key(prefix, allow_empty=True)
        keys = []
        for rel, path in _local_files(Path(local_dir)):
            key = _join(prefix, rel)
            self.put_file(key, path)
            keys.append(key)
        return keys

    def get_dir(self, prefix: str, local_dir: str | Path) -> list[Path]:
        """Download every key under ``prefix`` into ``local_dir`` (same relative layout); returns the paths."""
        prefix = check_key(prefix, allow_empty=True)
        keys = self.list(prefix)
        if not keys:
            raise ObjectNotFound(f"nothing stored under {self.describe(prefix)}")
        out = []
        for key in keys:
            rel = key[len(prefix) :].lstrip("/") if prefix else key
            out.append(self.get_file(key, Path(local_dir) / (rel or Path(key).name)))
        return out

    # ---- checkpoints ------------------------------------------------------------------------------------
    def checkpoint_key(self, experiment: str, name: str) -> str:
        return _join(check_key(experiment), "checkpoints", _check_name(name, "checkpoint name"))

    def commit_checkpoint(
        self,
        experiment: str,
        name: str,
        local_dir: str | Path,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> str:
        """Upload a checkpoint folder, then its manifest, then move ``<experiment>/latest`` to it.

        Returns the checkpoint's key (``<experiment>/checkpoints/<name>``). If any upload fails the manifest is
        not written and ``latest`` keeps naming the previous complete checkpoint. ``overwrite`` replaces a
        complete checkpoint of the same name, except the one ``latest`` names.
        """
        prefix = self.checkpoint_key(experiment, name)
        files = _local_files(Path(local_dir))
        if not files:
            raise StoreError(f"checkpoint folder {local_dir} is empty: nothing to commit")
        if any(rel == MANIFEST_NAME for rel, _ in files):
            raise StoreError(f"{local_dir} contains a file named {MANIFEST_NAME}, which the store reserves")
        try:
            json.dumps(dict(metadata or {}))
        except (TypeError, ValueError) as e:
            raise StoreError(f"checkpoint metadata for {name!r} is not JSON-serialisable: {e}") from e
        manifest_key = _join(prefix, MANIFEST_NAME)
        if self.exists(manifest_key):
            if not overwrite:
                raise StoreError(
                    f"checkpoint {self.describe(prefix)} already exists; choose another name or pass overwrite=True"
                )
            if self.latest_checkpoint(experiment) == name:
                raise StoreError(f"refusing to overwrite {self.describe(prefix)}: it is the experiment's latest")
        # Leftovers of an earlier interrupted upload (or the replaced checkpoint) must not mix with this one;
        # deleting the manifest first keeps the checkpoint marked incomplete until the new one is written.
        self.delete(manifest_key)
        self.delete_prefix(prefix)

        entries = {}
        total = 0
        for rel, path in files:
            digest = self.put_file(_join(prefix, rel), path)
            size = path.stat().st_size
            entries[rel] = {"sha256": digest, "size": size}
            total += size
        manifest = {
            "format": MANIFEST_FORMAT,
            "experiment": experiment,
            "name": name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": entries,
            "metadata": dict(metadata or {}),
        }
        manifest_sha = self.put_json(manifest_key, manifest)
        self._write_latest(experiment, name, manifest_sha, manifest["created_at"])
        log.info("committed checkpoint %s (%d files, %d bytes)", self.describe(prefix), len(entries), total)
        return prefix

    def _write_latest(self, experiment: str, name: str, manifest_sha: str, when: str) -> None:
        self.put_json(
            _join(check_key(experiment), LATEST_NAME),
            {"name": name, "key": self.checkpoint_key(experiment, name), "manifest_sha256": manifest_sha,
             "updated_at": when},
        )

    def set_latest(self, experiment: str, name: str) -> dict[str, Any]:
        """Point ``latest`` at the complete checkpoint ``name`` (after checking its manifest); returns the manifest.

        The recovery for a lost or damaged pointer: every file of the checkpoint is listed with its sha256 in the
        manifest, which is itself checked, so the pointer only ever names a complete checkpoint."""
        manifest = self.checkpoint_manifest(experiment, name)
        manifest_key = _join(self.checkpoint_key(experiment, name), MANIFEST_NAME)
        manifest_sha = hashlib.sha256(self.get_bytes(manifest_key)).hexdigest()
        self._write_latest(experiment, name, manifest_sha, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return manifest

    def latest_checkpoint(self, experiment: str) -> str | None:
        """The name of the experiment's latest complete checkpoint, or None if it has none yet."""
        pointer = self._latest_pointer(experiment)
        return None if pointer is None else pointer["name"]

    def _latest_pointer(self, experiment: str) -> dict[str, Any] | None:
        key = _join(check_key(experiment), LATEST_NAME)
        try:
            pointer = self.get_json(key)
        except ObjectNotFound:
            return None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("name"), str):
            raise StoreError(f"{self.describe(key)} is not a checkpoint pointer (no 'name'): {pointer!r}")
        return pointer

    def checkpoint_manifest(self, experiment: str, name_or_latest: str = "latest") -> dict[str, Any]:
        """The manifest of a complete checkpoint; raises if the checkpoint is missing or incomplete.

        Through ``latest`` the manifest is also checked against the sha256 the pointer recorded.
        """
        expected_sha = None
        if name_or_latest == LATEST_NAME:
            pointer = self._latest_pointer(experiment)
            if pointer is None:
                raise ObjectNotFound(
                    f"experiment {experiment!r} has no latest checkpoint in {self.uri} "
                    f"({self.describe(_join(experiment, LATEST_NAME))} is missing)"
                )
            name, expected_sha = _check_name(pointer["name"], "checkpoint name"), pointer.get("manifest_sha256")
        else:
            name = _check_name(name_or_latest, "checkpoint name")
        prefix = self.checkpoint_key(experiment, name)
        manifest_key = _join(prefix, MANIFEST_NAME)
        try:
            manifest = json.loads(self.get_bytes(manifest_key, sha256=expected_sha))
        except ObjectNotFound:
            if self.list(prefix):
                raise StoreError(
                    f"checkpoint {self.describe(prefix)} is incomplete (no {MANIFEST_NAME}): its upload was "
                    "interrupted; commit it again or fetch another checkpoint"
                ) from None
            raise ObjectNotFound(f"no checkpoint {self.describe(prefix)}") from None
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.describe(manifest_key)} is not valid JSON: {e}") from e
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise StoreError(f"{self.describe(manifest_key)} is not a checkpoint manifest")
        _check_manifest(manifest, name, self.describe(manifest_key))
        return manifest

    def fetch_checkpoint(self, experiment: str, name_or_latest: str, local_dir: str | Path) -> dict[str, Any]:
        """Download a checkpoint (``"latest"`` or a name) into ``local_dir``, verifying every file's sha256.

        Returns the manifest. Raises :class:`ChecksumMismatch` naming the object if any file differs from the
        manifest; files already verified stay, the bad one is not written.
        """
        manifest = self.checkpoint_manifest(experiment, name_or_latest)
        prefix = self.checkpoint_key(experiment, manifest["name"])
        dest = Path(local_dir)
        for rel, entry in sorted(manifest["files"].items()):
            key = _join(prefix, rel)
            path = self.get_file(key, dest / rel, sha256=entry["sha256"])
            if path.stat().st_size != entry["size"]:  # unreachable unless sha256 collides; cheap to check
                raise StoreError(f"{self.describe(key)}: size {path.stat().st_size} != manifest {entry['size']}")
        log.info("fetched checkpoint %s into %s", self.describe(prefix), dest)
        return manifest

    def list_checkpoints(self, experiment: str) -> list[str]:
        """Names of the experiment's complete checkpoints, sorted."""
        base = _join(check_key(experiment), "checkpoints")
        names = set()
        for key in self.list(base):
            rest = key[len(base) + 1 :].split("/")
            if len(rest) == 2 and rest[1] == MANIFEST_NAME:
                names.add(rest[0])
        return sorted(names)
