"""The folder backend: a store in a local folder (offline runs, ``kfp.local``, tests).

Writes go to a temporary file in the destination folder and are renamed into place; each object's sha256 sits in
a hidden ``.NAME.cure-sha256`` file beside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from cure.store.protocol import (
    _CHUNK,
    _SHA_RE,
    _SUM_SUFFIX,
    _TMP_MARK,
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoreError,
    _HashingWriter,
    _no_checksum,
    check_key,
)

log = logging.getLogger(__name__)

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
