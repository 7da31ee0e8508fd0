"""The S3 backend: a store in a bucket on MinIO (in a cluster) or any S3-compatible server, via the ``minio`` SDK.

Settings come from the environment (:func:`s3_settings`; in a cluster: a Kubernetes Secret mapped to env vars).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cure.store.protocol import (
    _CHUNK,
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoreError,
    StoreUnavailable,
    T,
    _HashingWriter,
    _join,
    _no_checksum,
    check_key,
    sha256_file,
)

log = logging.getLogger(__name__)

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
