"""Artifact store: model checkpoints, datasets and round histories, in MinIO in a cluster and in a folder offline.

Three modules: :mod:`cure.store.protocol` (keys, checksums, errors, and the checkpoint protocol every backend
shares), :mod:`cure.store.folder` (:class:`LocalStore`) and :mod:`cure.store.s3` (:class:`S3Store`);
:func:`open_store` picks one from a URI.

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

import re
from typing import Any
from urllib.parse import urlsplit

from cure.store.folder import LocalStore
from cure.store.protocol import (
    LATEST_NAME,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoreError,
    StoreUnavailable,
    check_key,
    json_safe,
    sha256_file,
)
from cure.store.s3 import S3Store, is_transient, s3_settings

__all__ = [
    "ChecksumMismatch", "LATEST_NAME", "LocalStore", "MANIFEST_FORMAT", "MANIFEST_NAME", "ObjectNotFound",
    "PreconditionFailed", "S3Store", "Store", "StoreError", "StoreUnavailable", "check_key", "is_transient",
    "json_safe", "open_store", "s3_settings", "sha256_file",
]


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
