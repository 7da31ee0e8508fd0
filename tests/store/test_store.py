"""The artifact store: the folder backend and the S3 backend against a real S3-compatible server.

No MinIO server binary can be installed on this machine, so the S3 path runs against moto's standalone S3
server (``moto.server.ThreadedMotoServer``, the ``moto[server]`` extra) listening on 127.0.0.1; the store talks
to it through the same ``minio`` SDK it uses against MinIO in a cluster. Transient failures are produced by a
small HTTP proxy on loopback between the store and the server that answers chosen requests with 503 SlowDown,
a non-XML 502, or a dropped connection; corruption by overwriting an object behind the store's back.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cure.store import (
    MANIFEST_NAME,
    ChecksumMismatch,
    LocalStore,
    ObjectNotFound,
    S3Store,
    StoreError,
    open_store,
    s3_settings,
)

ACCESS, SECRET = "cure-test-access", "cure-test-secret"


# ---- servers ------------------------------------------------------------------------------------------
Rule = tuple[Callable[[str, str], bool], str, int]  # (matches(method, path), action, times; -1 = always)


class FaultProxy:
    """HTTP proxy on loopback that forwards to the S3 server, failing requests that match a rule."""

    def __init__(self, upstream_port: int):
        self.rules: list[list] = []
        self.log: list[tuple[str, str, str]] = []  # (method, path, "ok" | action)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = proxy._take(self.command, self.path)
                proxy.log.append((self.command, self.path, action or "ok"))
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "slowdown":
                    xml = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    return self._reply(503, {"Content-Type": "application/xml"}, xml)
                if action == "bad-gateway":
                    return self._reply(502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>")
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                headers = {
                    k: v for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection")
                }
                if self.command != "HEAD":
                    headers["Content-Length"] = str(len(data))
                conn.close()
                self._reply(resp.status, headers, data)

            def _reply(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, action: str, times: int = 1, when: Callable[[str, str], bool] = lambda m, p: True) -> None:
        with self.lock:
            self.rules.append([when, action, times])

    def _take(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                when, action, times = rule
                if times != 0 and when(method, path):
                    rule[2] = times - 1 if times > 0 else -1
                    return action
        return None

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
        self.log.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def proxy(moto_port: int) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_port)
    yield p
    p.close()


def _env(port: int) -> dict[str, str]:
    return {"CURE_S3_ENDPOINT": f"http://127.0.0.1:{port}", "CURE_S3_ACCESS_KEY": ACCESS, "CURE_S3_SECRET_KEY": SECRET}


_bucket_counter = iter(range(1000))


@pytest.fixture
def bucket(moto_port: int) -> str:
    """A fresh bucket per test, created directly with the SDK (not through the store under test)."""
    from minio import Minio

    name = f"cure-test-{next(_bucket_counter)}"
    Minio(f"127.0.0.1:{moto_port}", ACCESS, SECRET, secure=False).make_bucket(name)
    return name


@pytest.fixture
def s3(bucket: str, proxy: FaultProxy) -> Iterator[S3Store]:
    """A store that talks through the fault proxy, with short backoff so retries cost milliseconds."""
    proxy.clear()
    store = open_store(f"s3://{bucket}/runs", env=_env(proxy.port), retries=3, backoff_s=0.01, part_size=5 << 20)
    assert isinstance(store, S3Store)
    yield store
    proxy.clear()


def _raw(moto_port: int):
    from minio import Minio

    return Minio(f"127.0.0.1:{moto_port}", ACCESS, SECRET, secure=False)


def _make_ckpt(d: Path, tag: str, big: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"tag": tag}))
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "tokenizer.json").write_text(f"tokenizer {tag}\n" * 10)
    (d / "model.safetensors").write_bytes(os.urandom(big or 4096))
    return d


def _same_tree(a: Path, b: Path) -> bool:
    def files(d: Path) -> dict[str, str]:
        return {
            p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob("*") if p.is_file()
        }

    return files(a) == files(b)


# ---- both backends ------------------------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return request.getfixturevalue("s3")


def test_objects_roundtrip_and_folder_semantics(store, tmp_path: Path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    digest = store.put_file("exp/data/a.bin", src)
    assert digest == hashlib.sha256(b"x" * 1000).hexdigest()
    store.put_json("exp/history.json", [{"round": 0, "code_acc": 0.25}])
    store.put_bytes("exp/data10/b.txt", b"b")
    assert store.exists("exp/data/a.bin") and not store.exists("exp/data/missing")
    assert store.get_json("exp/history.json") == [{"round": 0, "code_acc": 0.25}]
    out = store.get_file("exp/data/a.bin", tmp_path / "dl" / "a.bin")
    assert out.read_bytes() == b"x" * 1000
    # a prefix is a folder: exp/data never covers exp/data10
    assert store.list("exp/data") == ["exp/data/a.bin"]
    assert store.list("exp") == ["exp/data/a.bin", "exp/data10/b.txt", "exp/history.json"]
    assert store.list("exp/history.json") == ["exp/history.json"]
    assert store.list("nothing") == []
    with pytest.raises(ObjectNotFound, match="exp/none.json"):
        store.get_json("exp/none.json")
    with pytest.raises(ValueError, match="invalid"):
        store.put_bytes("exp/../escape", b"")
    assert store.delete_prefix("exp/data") == 1
    assert store.list("exp") == ["exp/data10/b.txt", "exp/history.json"]

    d = _make_ckpt(tmp_path / "tree", "t")
    keys = store.put_dir("trees/t1", d)
    assert sorted(keys) == ["trees/t1/config.json", "trees/t1/model.safetensors", "trees/t1/sub/tokenizer.json"]
    got = store.get_dir("trees/t1", tmp_path / "tree_back")
    assert len(got) == 3 and _same_tree(d, tmp_path / "tree_back")


def test_checkpoint_commit_latest_fetch(store, tmp_path: Path):
    assert store.latest_checkpoint("exp") is None
    with pytest.raises(ObjectNotFound, match="no latest checkpoint"):
        store.fetch_checkpoint("exp", "latest", tmp_path / "x")
    c1 = _make_ckpt(tmp_path / "c1", "one")
    key = store.commit_checkpoint("exp", "round-001", c1, metadata={"round": 1})
    assert key == "exp/checkpoints/round-001"
    assert store.latest_checkpoint("exp") == "round-001"
    c2 = _make_ckpt(tmp_path / "c2", "two")
    store.commit_checkpoint("exp", "round-002", c2)
    assert store.latest_checkpoint("exp") == "round-002"
    assert store.list_checkpoints("exp") == ["round-001", "round-002"]

    manifest = store.fetch_checkpoint("exp", "latest", tmp_path / "got2")
    assert manifest["name"] == "round-002" and set(manifest["files"]) == {
        "config.json",
        "model.safetensors",
        "sub/tokenizer.json",
    }
    assert _same_tree(c2, tmp_path / "got2")  # the manifest itself is not part of the model folder
    assert store.fetch_checkpoint("exp", "round-001", tmp_path / "got1")["metadata"] == {"round": 1}
    assert _same_tree(c1, tmp_path / "got1")

    with pytest.raises(StoreError, match="already exists"):
        store.commit_checkpoint("exp", "round-001", c2)
    with pytest.raises(StoreError, match="latest"):
        store.commit_checkpoint("exp", "round-002", c1, overwrite=True)
    store.commit_checkpoint("exp", "round-001", c2, overwrite=True)
    assert store.latest_checkpoint("exp") == "round-001"
    with pytest.raises(ValueError, match="checkpoint name"):
        store.commit_checkpoint("exp", "a/b", c1)


def test_failed_upload_mid_checkpoint_keeps_latest(store, tmp_path: Path, request):
    good = _make_ckpt(tmp_path / "good", "good")
    store.commit_checkpoint("exp", "round-001", good)
    bad = _make_ckpt(tmp_path / "bad", "bad")
    if isinstance(store, LocalStore):
        (bad / "zz-weights.bin").symlink_to(tmp_path / "vanished")  # unreadable file after others uploaded
        fails = pytest.raises(StoreError, match="zz-weights.bin")
    else:
        proxy = request.getfixturevalue("proxy")
        proxy.fail("slowdown", times=-1, when=lambda m, p: m == "PUT" and "sub/tokenizer.json" in p)
        fails = pytest.raises(StoreError, match=r"gave up after 4 attempts.*SlowDown")
    with fails:
        store.commit_checkpoint("exp", "round-002", bad)
    if not isinstance(store, LocalStore):
        proxy.clear()
        # some files of round-002 did reach the server before the failure; still no manifest
        assert store.list("exp/checkpoints/round-002")
    assert not store.exists(f"exp/checkpoints/round-002/{MANIFEST_NAME}")
    assert store.latest_checkpoint("exp") == "round-001"
    assert store.list_checkpoints("exp") == ["round-001"]
    if store.list("exp/checkpoints/round-002"):
        with pytest.raises(StoreError, match="incomplete"):
            store.fetch_checkpoint("exp", "round-002", tmp_path / "x")
    store.fetch_checkpoint("exp", "latest", tmp_path / "back")
    assert _same_tree(good, tmp_path / "back")


# ---- folder backend -----------------------------------------------------------------------------------
def test_local_uris_and_atomic_writes(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store("file://./rel").root == (tmp_path / "rel").absolute()
    assert open_store(f"file://{tmp_path}/abs").root == tmp_path / "abs"
    assert open_store("bare/dir").root == (tmp_path / "bare/dir").absolute()
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store("gs://bucket")
    store = open_store("file://./rel")
    store.put_bytes("k/v", b"old")
    # a reader never sees a half-written file: the new bytes arrive by rename, no temp files remain
    store.put_bytes("k/v", b"new" * 1000)
    assert (tmp_path / "rel/k/v").read_bytes() == b"new" * 1000
    assert sorted(p.name for p in (tmp_path / "rel/k").iterdir()) == [".v.cure-sha256", "v"]  # object + its sha256


def test_local_corruption_detected(tmp_path: Path):
    store = open_store(str(tmp_path / "store"))
    store.commit_checkpoint("exp", "c", _make_ckpt(tmp_path / "c", "c"))
    obj = tmp_path / "store/exp/checkpoints/c/model.safetensors"
    obj.write_bytes(b"bit rot")
    with pytest.raises(ChecksumMismatch, match=str(obj)):
        store.fetch_checkpoint("exp", "latest", tmp_path / "out")
    assert not (tmp_path / "out/model.safetensors").exists()
    # the latest pointer records the manifest's sha256, so an edited manifest is caught as well
    manifest = tmp_path / f"store/exp/checkpoints/c/{MANIFEST_NAME}"
    manifest.write_text(manifest.read_text().replace('"size"', '"size" ', 1))
    with pytest.raises(ChecksumMismatch, match=MANIFEST_NAME):
        store.fetch_checkpoint("exp", "latest", tmp_path / "out")


# ---- S3 backend ---------------------------------------------------------------------------------------
def test_s3_multipart_upload_with_retries(s3: S3Store, proxy: FaultProxy, tmp_path: Path):
    """A 6 MiB file goes up in two parts; the second part is refused once (503 SlowDown) and once dropped."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 << 20))
    proxy.fail("slowdown", times=1, when=lambda m, p: m == "PUT" and "partNumber=2" in p)
    proxy.fail("drop", times=1, when=lambda m, p: m == "PUT" and "partNumber=2" in p)
    s3.put_file("exp/big.bin", big)
    part_puts = [(a) for m, p, a in proxy.log if m == "PUT" and "partNumber=" in p]
    assert any(m == "POST" and "uploads" in p for m, p, _ in proxy.log)  # CreateMultipartUpload
    assert part_puts.count("slowdown") == 1 and part_puts.count("drop") == 1 and part_puts.count("ok") >= 2
    proxy.clear()
    proxy.fail("bad-gateway", times=2, when=lambda m, p: m == "GET" and "big.bin" in p)
    s3.get_file("exp/big.bin", tmp_path / "back.bin")
    assert [a for m, p, a in proxy.log if m == "GET" and "big.bin" in p] == ["bad-gateway", "bad-gateway", "ok"]
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_s3_retries_are_bounded(s3: S3Store, proxy: FaultProxy):
    proxy.log.clear()
    proxy.fail("drop", times=-1)
    with pytest.raises(StoreError, match=r"gave up after 4 attempts.*CURE_S3_ENDPOINT"):
        s3.put_bytes("exp/x", b"x")
    assert [a for _, _, a in proxy.log] == ["drop"] * 4  # one try + retries=3, then a clear error


def test_s3_corrupted_object_detected(s3: S3Store, moto_port: int, bucket: str, tmp_path: Path):
    import io

    s3.commit_checkpoint("exp", "round-001", _make_ckpt(tmp_path / "c", "c"))
    raw = _raw(moto_port)
    name = "runs/exp/checkpoints/round-001/model.safetensors"
    raw.put_object(bucket, name, io.BytesIO(b"tampered"), 8)
    with pytest.raises(ChecksumMismatch, match=f"s3://{bucket}/{name}"):
        s3.fetch_checkpoint("exp", "latest", tmp_path / "out")
    assert not (tmp_path / "out/model.safetensors").exists()
    # plain objects carry their sha256 as metadata: bit rot that keeps the metadata is caught too
    s3.put_bytes("exp/notes.txt", b"hello")
    stored = raw.stat_object(bucket, "runs/exp/notes.txt").metadata["x-amz-meta-sha256"]
    raw.put_object(bucket, "runs/exp/notes.txt", io.BytesIO(b"hellO"), 5, metadata={"sha256": stored})
    with pytest.raises(ChecksumMismatch, match="runs/exp/notes.txt"):
        s3.get_bytes("exp/notes.txt")


def test_s3_missing_bucket_and_bad_credentials(moto_port: int, bucket: str):
    with pytest.raises(StoreError, match="'no-such-bucket'.*does not exist"):
        open_store("s3://no-such-bucket", env=_env(moto_port), retries=0)
    with pytest.raises(StoreError, match="CURE_S3_ENDPOINT"):
        open_store(f"s3://{bucket}", env={"CURE_S3_ACCESS_KEY": "a", "CURE_S3_SECRET_KEY": "b"})
    with pytest.raises(StoreError, match="CURE_S3_ACCESS_KEY and CURE_S3_SECRET_KEY"):
        open_store(f"s3://{bucket}", env={"CURE_S3_ENDPOINT": f"127.0.0.1:{moto_port}"})
    # moto enforces signatures once its "initial no-auth" allowance is zero: unknown keys are then refused
    def reset_auth(count: bytes) -> dict:
        url = f"http://127.0.0.1:{moto_port}/moto-api/reset-auth"
        req = urllib.request.Request(url, data=count, method="POST", headers={"Content-Type": "text/plain"})
        return json.load(urllib.request.urlopen(req))

    answer = reset_auth(b"0")
    try:
        with pytest.raises(StoreError, match=r"refused the credentials.*CURE_S3_ACCESS_KEY"):
            open_store(f"s3://{bucket}", env=_env(moto_port), retries=0)
    finally:
        reset_auth(answer["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode())


def test_s3_settings_from_env():
    s = s3_settings({"CURE_S3_ENDPOINT": "minio.kubeflow:9000", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert (s["endpoint"], s["secure"], s["access_key"], s["secret_key"]) == ("minio.kubeflow:9000", True, "a", "b")
    s = s3_settings({"CURE_S3_ENDPOINT": "http://minio:9000", "MINIO_ROOT_USER": "u", "MINIO_ROOT_PASSWORD": "p"})
    assert (s["endpoint"], s["secure"], s["access_key"]) == ("minio:9000", False, "u")
    s = s3_settings({"CURE_S3_ENDPOINT": "minio:9000", "CURE_S3_SECURE": "false", "CURE_S3_ACCESS_KEY": "c",
                     "CURE_S3_SECRET_KEY": "d", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})  # fmt: skip
    assert (s["secure"], s["access_key"]) == (False, "c")
    with pytest.raises(StoreError, match="AWS_SECRET_ACCESS_KEY is not"):
        s3_settings({"CURE_S3_ENDPOINT": "m:1", "AWS_ACCESS_KEY_ID": "a"})
    with pytest.raises(StoreError, match="CURE_S3_SECURE"):
        s3_settings({"CURE_S3_ENDPOINT": "m:1", "CURE_S3_SECURE": "maybe", "CURE_S3_ACCESS_KEY": "a",
                     "CURE_S3_SECRET_KEY": "b"})  # fmt: skip
