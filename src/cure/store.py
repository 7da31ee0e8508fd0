"""Artifact store: model checkpoints, datasets and round histories, in MinIO in a cluster and in a folder offline.

KFP already keeps each stage's artifacts under its pipeline root; this store holds what outlives one run: the
checkpoints a recurring run continues from, and the round histories its reports are drawn from. Both backends
have the same semantics, so the offline demo exercises the cluster's logic:

* keys are ``/``-separated paths relative to the store root (``s3://bucket/prefix`` or a folder);
  ``list`` and ``delete_prefix`` treat a prefix as a folder (``a/b`` covers ``a/b`` and ``a/b/...``, never ``a/bc``);
* every write is all-or-nothing: the folder backend writes a temporary file and renames it, S3 makes an object
  visible only when its upload (multipart for large files) completes;
* every object (files, JSON, manifests, histories) carries its sha256 (S3 user metadata; a hidden
  ``.NAME.cure-sha256`` file beside it in a folder store) and every read verifies it: an object without one is
  refused, not trusted;
* a manifest's file paths must stay inside the destination folder (no absolute paths, no ``..``);
* a checkpoint is complete only when its manifest (sha256 and size of every file) exists, and the manifest is
  written after every file; the experiment's ``latest`` pointer moves only after that. A crash at any moment
  therefore leaves ``latest`` naming a complete, verifiable checkpoint.

S3 settings come from the environment (in a cluster: a Kubernetes Secret mapped to env vars):
``CURE_S3_ENDPOINT`` (``host:port`` or ``http(s)://host:port``), ``CURE_S3_ACCESS_KEY``/``CURE_S3_SECRET_KEY``
(fallbacks: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``MINIO_ROOT_USER``/``MINIO_ROOT_PASSWORD``,
``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``), ``CURE_S3_SECURE`` (``true``/``false``; default: the endpoint's
scheme, else true), ``CURE_S3_REGION`` (optional).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

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


# ---------------------------------------------------------------------------------------------------------
# Folder backend
# ---------------------------------------------------------------------------------------------------------
class LocalStore(Store):
    """A folder. Writes go to a temporary file in the destination folder and are renamed into place."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def describe(self, key: str) -> str:
        return str(self.root / key.strip("/")) if key.strip("/") else str(self.root)

    def _sum_path(self, key: str) -> Path:
        p = self._path(key)
        return p.with_name(f".{p.name}{_SUM_SUFFIX}")

    def _recorded_sha(self, key: str) -> str:
        try:
            digest = self._sum_path(key).read_text().strip()
        except FileNotFoundError:
            raise _no_checksum(self.describe(key)) from None
        if not _SHA_RE.match(digest):
            raise StoreError(f"{self._sum_path(key)}: not a sha256 ({digest[:80]!r}); write {self.describe(key)} again")
        return digest

    def _write(self, key: str, chunks: Iterator[bytes]) -> str:
        w = _HashingWriter(self._path(key))
        try:
            for chunk in chunks:
                w.write(chunk)
            digest = w.sha.hexdigest()
            # The checksum lands first: a crash before the object's rename leaves a mismatch that reads refuse.
            s = _HashingWriter(self._sum_path(key))
            s.write(digest.encode() + b"\n")
            s.commit(str(self._sum_path(key)), None)
        except BaseException:
            w.discard()
            raise
        w.commit(self.describe(key), None)
        return digest

    def put_file(self, key: str, path: str | Path) -> str:
        try:
            f = open(path, "rb")
        except OSError as e:
            raise StoreError(f"cannot read {path} to store it as {self.describe(key)}: {e}") from e
        with f:
            return self._write(key, iter(lambda: f.read(_CHUNK), b""))

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._write(key, iter([data]))

    def get_file(self, key: str, path: str | Path, sha256: str | None = None) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object {self.describe(key)}")
        expected = sha256 or self._recorded_sha(key)
        w = _HashingWriter(Path(path))
        try:
            with open(src, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    w.write(chunk)
        except BaseException:
            w.discard()
            raise
        return w.commit(self.describe(key), expected)

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object {self.describe(key)}")
        expected = sha256 or self._recorded_sha(key)
        data = src.read_bytes()
        if (actual := hashlib.sha256(data).hexdigest()) != expected:
            raise ChecksumMismatch(self.describe(key), expected, actual)
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get_bytes(key)
        except ObjectNotFound:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, version: str | None) -> None:
        import fcntl

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file carries the temporary-file mark, so listings never show it.
        with open(path.with_name(f".{path.name}{_TMP_MARK}lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.get_versioned(key)
            now = None if current is None else current[1]
            if now != version:
                raise PreconditionFailed(
                    f"{self.describe(key)} changed since it was read (expected "
                    f"{'no object' if version is None else 'version ' + version[:12]}, found "
                    f"{'no object' if now is None else 'version ' + now[:12]})"
                )
            self.put_bytes(key, data)

    def list(self, prefix: str = "") -> list[str]:
        prefix = check_key(prefix, allow_empty=True)
        base = self.root / prefix if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = []
        for root, _dirs, files in os.walk(base):
            for name in files:
                if _TMP_MARK not in name and not name.endswith(_SUM_SUFFIX):
                    keys.append((Path(root) / name).relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        p = self._path(key)
        if p.is_file():
            p.unlink()
        self._sum_path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        prefix = check_key(prefix, allow_empty=True)
        keys = self.list(prefix)
        base = self.root / prefix if prefix else self.root
        if base.is_file():
            self.delete(prefix)
        elif base.is_dir():
            if prefix:
                shutil.rmtree(base)
            else:
                for child in base.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        return len(keys)


# ---------------------------------------------------------------------------------------------------------
# S3 / MinIO backend
# ---------------------------------------------------------------------------------------------------------
_ACCESS_ENV = (
    ("CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
)
_ENDPOINT_ENV = ("CURE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_TRANSIENT_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
    "XMinioServerNotInitialized",
}
_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
}
_CRED_HINT = (
    "set CURE_S3_ACCESS_KEY and CURE_S3_SECRET_KEY (in a cluster: from the Kubernetes Secret) to a key pair "
    "allowed to read and write the bucket"
)


def _truthy(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise StoreError(f"{name}={value!r} is not a boolean: use true or false")


def s3_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Endpoint, credentials and TLS flag from the environment; errors name the variable to set."""
    env = os.environ if env is None else env
    endpoint = next((env[n] for n in _ENDPOINT_ENV if env.get(n)), None)
    if not endpoint:
        raise StoreError(
            "no S3 endpoint: set CURE_S3_ENDPOINT to the MinIO/S3 address, e.g. "
            "http://minio-service.kubeflow:9000 or minio.example.com:443"
        )
    secure: bool | None = None
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StoreError(f"CURE_S3_ENDPOINT={endpoint!r} is not host:port or http(s)://host:port")
        secure, endpoint = parts.scheme == "https", parts.netloc
    elif "/" in endpoint:
        raise StoreError(f"CURE_S3_ENDPOINT={endpoint!r} is not host:port or http(s)://host:port")
    if env.get("CURE_S3_SECURE"):
        secure = _truthy(env["CURE_S3_SECURE"], "CURE_S3_SECURE")
    access = secret = None
    for a_name, s_name in _ACCESS_ENV:
        if env.get(a_name):
            if not env.get(s_name):
                raise StoreError(f"{a_name} is set but {s_name} is not: set both (or CURE_S3_ACCESS_KEY/_SECRET_KEY)")
            access, secret = env[a_name], env[s_name]
            break
    if access is None:
        raise StoreError(f"no S3 credentials: {_CRED_HINT}")
    return {
        "endpoint": endpoint,
        "secure": True if secure is None else secure,
        "access_key": access,
        "secret_key": secret,
        "session_token": env.get("AWS_SESSION_TOKEN") or None,
        "region": env.get("CURE_S3_REGION") or env.get("AWS_REGION") or None,
    }


def _status(exc: BaseException) -> int | None:
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, S3Error):
        return getattr(exc.response, "status", None)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", None)
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: connection trouble, a 5xx or 429 answer, or S3's SlowDown-like codes."""
    import http.client

    import urllib3
    from minio.error import S3Error

    if isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, S3Error) and exc.code in _TRANSIENT_CODES:
        return True
    status = _status(exc)
    return status is not None and (status >= 500 or status == 429)


class S3Store(Store):
    """A bucket (and optional prefix) on MinIO or any S3-compatible server, through the ``minio`` SDK.

    Each operation is retried as a whole on transient errors, ``retries`` times at most, with exponential
    backoff and jitter; the HTTP client itself does not retry, so the count is exact. A multipart upload that
    fails is aborted by the SDK and started again.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        env: Mapping[str, str] | None = None,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        part_size: int = 64 << 20,
        timeout_s: float = 300.0,
    ):
        import certifi
        import urllib3
        from minio import Minio

        settings = s3_settings(env)
        self.bucket, self.prefix = bucket, check_key(prefix, allow_empty=True)
        self.endpoint = settings["endpoint"]
        self.uri = f"s3://{_join(bucket, self.prefix)}"
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.part_size = part_size
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(10.0, timeout_s), read=timeout_s),
            maxsize=10,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self.client = Minio(
            settings["endpoint"],
            access_key=settings["access_key"],
            secret_key=settings["secret_key"],
            session_token=settings["session_token"],
            secure=settings["secure"],
            region=settings["region"],
            http_client=http,
        )
        scheme = "https" if settings["secure"] else "http"
        self._where = f"bucket {bucket!r} at {scheme}://{self.endpoint}"
        if not self._call(f"open {self.uri}", lambda: self.client.bucket_exists(bucket)):
            raise StoreError(
                f"{self._where} does not exist: create it (e.g. `mc mb ALIAS/{bucket}`, or the bucket job in "
                "manifests/) or point the store URI at an existing bucket"
            )

    def _name(self, key: str) -> str:
        return _join(self.prefix, check_key(key))

    def describe(self, key: str) -> str:
        return f"s3://{_join(self.bucket, self.prefix, key)}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from minio.error import S3Error

        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                if isinstance(exc, S3Error) and exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise ObjectNotFound(f"{what}: no such object") from exc
                if isinstance(exc, S3Error) and exc.code == "NoSuchBucket":
                    raise StoreError(f"{what}: {self._where} does not exist") from exc
                if isinstance(exc, S3Error) and exc.code in _CREDENTIAL_CODES:
                    raise StoreError(
                        f"{what}: {self._where} refused the credentials ({exc.code}); {_CRED_HINT}"
                    ) from exc
                if not is_transient(exc):
                    raise
                if attempt > self.retries:
                    raise StoreUnavailable(
                        f"{what}: gave up after {attempt} attempts, last error: {type(exc).__name__}: {exc}. "
                        f"Check that {self._where} is reachable (CURE_S3_ENDPOINT, CURE_S3_SECURE) and healthy."
                    ) from exc
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s) * random.uniform(0.5, 1.0)
                log.warning(
                    "%s: transient error (%s: %s); retry %d/%d in %.2fs",
                    what,
                    type(exc).__name__,
                    str(exc)[:200],
                    attempt,
                    self.retries,
                    delay,
                )
                time.sleep(delay)

    def put_file(self, key: str, path: str | Path) -> str:
        name = self._name(key)
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise StoreError(f"cannot read {path} to store it as {self.describe(key)}: {e}") from e
        self._call(
            f"upload {path} to {self.describe(key)}",
            lambda: self.client.fput_object(
                self.bucket, name, str(path), metadata={"sha256": digest}, part_size=self.part_size
            ),
        )
        return digest

    def put_bytes(self, key: str, data: bytes) -> str:
        name = self._name(key)
        digest = hashlib.sha256(data).hexdigest()
        self._call(
            f"write {self.describe(key)}",
            lambda: self.client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), metadata={"sha256": digest}
            ),
        )
        return digest

    def _download(self, key: str, sink: Callable[[], Any], sha256: str | None) -> Any:
        """Stream ``key`` into a fresh writer from ``sink()`` per attempt; verify against ``sha256`` or metadata."""
        name = self._name(key)
        where = self.describe(key)

        def attempt() -> Any:
            resp = self.client.get_object(self.bucket, name)
            w = sink()
            try:
                for chunk in resp.stream(_CHUNK):
                    w.write(chunk)
            except BaseException:
                w.discard()
                raise
            finally:
                resp.close()
                resp.release_conn()
            expected = sha256 or resp.headers.get("x-amz-meta-sha256")
            if not expected:
                w.discard()
                raise _no_checksum(where)
            if isinstance(w, _BytesWriter) and w.headers is not None:
                w.headers["etag"] = (resp.headers.get("etag") or "").strip('"')
            return w.commit(where, expected)

        return self._call(f"download {where}", attempt)

    def get_file(self, key: str, path: str | Path, sha256: str | None = None) -> Path:
        return self._download(key, lambda: _HashingWriter(Path(path)), sha256)

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        return self._download(key, _BytesWriter, sha256)

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self._call(f"stat {self.describe(key)}", lambda: self.client.stat_object(self.bucket, name))
        except ObjectNotFound:
            return False
        return True

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        holder: dict[str, str] = {}

        def sink() -> _BytesWriter:
            return _BytesWriter(holder)

        try:
            data = self._download(key, sink, None)
        except ObjectNotFound:
            return None
        return data, holder["etag"]

    def put_if(self, key: str, data: bytes, version: str | None) -> None:
        from minio.error import S3Error

        name = self._name(key)
        digest = hashlib.sha256(data).hexdigest()
        # S3 conditional writes (If-None-Match: * since 2024-08, If-Match since 2024-11; MinIO and moto alike).
        condition = {"If-None-Match": "*"} if version is None else {"If-Match": f'"{version}"'}
        headers = {"Content-Type": "application/json", "x-amz-meta-sha256": digest, **condition}
        try:
            self._call(f"write {self.describe(key)} if unchanged",
                       lambda: self.client._put_object(self.bucket, name, data, headers))
        except ObjectNotFound as e:  # If-Match on an object deleted meanwhile
            raise PreconditionFailed(f"{self.describe(key)} was deleted since it was read") from e
        except S3Error as e:
            if e.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise PreconditionFailed(f"{self.describe(key)} changed since it was read ({e.code})") from e
            raise

    def list(self, prefix: str = "") -> list[str]:
        prefix = check_key(prefix, allow_empty=True)
        full = _join(self.prefix, prefix)

        def run() -> list[str]:
            found = []
            for obj in self.client.list_objects(self.bucket, prefix=full + "/" if full else "", recursive=True):
                found.append(obj.object_name)
            if full:
                try:
                    self.client.stat_object(self.bucket, full)
                    found.append(full)
                except Exception as exc:
                    if getattr(exc, "code", None) not in ("NoSuchKey", "NoSuchObject"):
                        raise
            return found

        names = self._call(f"list {self.describe(prefix)}", run)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted({n[cut:] for n in names if len(n) > cut and not n.endswith("/")})

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call(f"delete {self.describe(key)}", lambda: self.client.remove_object(self.bucket, name))

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = self.list(prefix)
        for i in range(0, len(keys), 1000):
            batch = [DeleteObject(self._name(k)) for k in keys[i : i + 1000]]

            def run(batch: list[DeleteObject] = batch) -> list[Any]:
                return list(self.client.remove_objects(self.bucket, batch))

            errors = self._call(f"delete under {self.describe(prefix)}", run)
            if errors:
                raise StoreError(f"could not delete {len(errors)} objects under {self.describe(prefix)}: {errors[0]}")
        return len(keys)


class _BytesWriter:
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.buf = io.BytesIO()
        self.sha = hashlib.sha256()
        self.headers = headers  # when given, receives the object's etag

    def write(self, data: bytes) -> None:
        self.buf.write(data)
        self.sha.update(data)

    def commit(self, where: str, expected_sha256: str | None) -> bytes:
        actual = self.sha.hexdigest()
        if expected_sha256 and actual != expected_sha256:
            raise ChecksumMismatch(where, expected_sha256, actual)
        return self.buf.getvalue()

    def discard(self) -> None:
        self.buf = io.BytesIO()


# ---------------------------------------------------------------------------------------------------------
def open_store(uri: str, **s3_options: Any) -> Store:
    """Open ``file:///abs/dir``, ``file://./rel``, a bare folder path, or ``s3://bucket[/prefix]``.

    ``s3_options`` go to :class:`S3Store` (``env``, ``retries``, ``backoff_s``, ``part_size``, ``timeout_s``).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StoreError("empty store URI: use file://DIR, a folder path, or s3://bucket[/prefix]")
    uri = uri.strip()
    if uri.startswith("s3://"):
        rest = uri[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
            raise StoreError(f"store URI {uri!r}: {bucket!r} is not a valid bucket name")
        return S3Store(bucket, prefix, **s3_options)
    if s3_options:
        raise TypeError(f"options {sorted(s3_options)} apply only to s3:// stores, not {uri!r}")
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        host = parts.netloc
        if host in ("", "localhost"):
            return LocalStore(parts.path)
        return LocalStore(host + parts.path)  # file://./rel or file://rel/dir: relative to the working folder
    if "://" in uri:
        raise StoreError(f"store URI {uri!r}: unknown scheme; use file://DIR, a folder path, or s3://bucket[/prefix]")
    return LocalStore(uri)
