"""The store trusts nothing it returns: every object (files, JSON, histories, manifests) is checked against its
recorded sha256 on both backends, an object without one is refused, manifests are verified however a checkpoint
is fetched, and manifest paths cannot leave the destination folder."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_store import _make_ckpt, _raw, bucket, proxy, s3  # noqa: F401  (fixtures)

from cure.store import ChecksumMismatch, LocalStore, StoreError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return request.getfixturevalue("s3")


def _tamper(store, key: str, data: bytes, request, keep_checksum: bool = True) -> None:
    """Replace an object's bytes behind the store's back (bit rot, or a hostile writer)."""
    if isinstance(store, LocalStore):
        store._path(key).write_bytes(data)
        if not keep_checksum:
            store._sum_path(key).unlink()
        return
    raw, name = _raw(request.getfixturevalue("moto_port")), f"{store.prefix}/{key}"
    meta = raw.stat_object(store.bucket, name).metadata.get("x-amz-meta-sha256")
    raw.put_object(store.bucket, name, io.BytesIO(data), len(data),
                   metadata={"sha256": meta} if keep_checksum else None)


def test_json_and_files_are_verified(store, tmp_path, request):
    store.put_json("exp/runs/r/history.json", [{"round": 1, "code_acc": 0.5}])
    assert store.get_json("exp/runs/r/history.json") == [{"round": 1, "code_acc": 0.5}]
    _tamper(store, "exp/runs/r/history.json", b'[{"round": 1, "code_acc": 0.9}]\n', request)
    with pytest.raises(ChecksumMismatch, match="history.json"):
        store.get_json("exp/runs/r/history.json")
    src = tmp_path / "report.html"
    src.write_text("<p>ok</p>")
    store.put_file("exp/report.html", src)
    _tamper(store, "exp/report.html", b"<p>KO</p>", request)
    with pytest.raises(ChecksumMismatch):
        store.get_file("exp/report.html", tmp_path / "got.html")
    assert not (tmp_path / "got.html").exists()
    # an object with no recorded checksum is refused rather than trusted
    _tamper(store, "exp/report.html", b"<p>ok</p>", request, keep_checksum=False)
    with pytest.raises(StoreError, match="no recorded sha256"):
        store.get_bytes("exp/report.html")
    assert store.list("exp") == ["exp/report.html", "exp/runs/r/history.json"]  # checksums are not listed


def test_manifest_verified_when_fetched_by_name(store, tmp_path, request):
    store.commit_checkpoint("exp", "round-001", _make_ckpt(tmp_path / "c1", "one"))
    store.commit_checkpoint("exp", "round-002", _make_ckpt(tmp_path / "c2", "two"))
    key = "exp/checkpoints/round-001/cure-manifest.json"
    text = store.get_bytes(key).replace(b'"one"', b'"uno"')
    _tamper(store, key, text + b" ", request)
    with pytest.raises(ChecksumMismatch, match="cure-manifest.json"):
        store.fetch_checkpoint("exp", "round-001", tmp_path / "out")


@pytest.mark.parametrize("rel", ["/tmp/evil", "../evil", "sub/../../evil", "./config.json", "a//b", "a\\b"])
def test_manifest_paths_stay_inside_the_destination(store, tmp_path, rel):
    store.commit_checkpoint("exp", "round-001", _make_ckpt(tmp_path / "c1", "one"))
    key = "exp/checkpoints/round-001/cure-manifest.json"
    manifest = store.get_json(key)
    entry = manifest["files"]["config.json"]
    manifest["files"][rel] = entry  # a hostile but self-consistent manifest (written with a valid checksum)
    store.put_json(key, manifest)
    dest = tmp_path / "deep" / "dest"
    for name in ("round-001", "latest"):
        if name == "latest":
            store.put_json("exp/latest", {"name": "round-001", "key": "exp/checkpoints/round-001",
                                          "manifest_sha256": store.put_json(key, manifest)})
        with pytest.raises(StoreError, match="plain relative path"):
            store.fetch_checkpoint("exp", name, dest)
    assert not dest.exists() and not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()


def test_stored_and_fetched_files_get_the_normal_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        store = open_store(str(tmp_path / "store"))
        store.put_bytes("exp/a.txt", b"a")
        got = store.get_file("exp/a.txt", tmp_path / "a.txt")
    finally:
        os.umask(old)
    assert (tmp_path / "store/exp/a.txt").stat().st_mode & 0o777 == 0o644
    assert got.stat().st_mode & 0o777 == 0o644
