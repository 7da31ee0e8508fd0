"""cure.store against the two S3 servers the manifests point it at, as their settings look in a cluster:

* our own server (manifests/overlays/store): bucket ``cure``, endpoint and region from Secret cure-minio;
* the store Kubeflow ships (SeaweedFS behind Service ``minio-service`` in ``kubeflow``, key pair in Secret
  ``mlpipeline-minio-artifact``): the existing bucket ``mlpipeline`` with a ``cure`` prefix.

Both are S3 with path-style addressing (the ``minio`` SDK uses it for any endpoint that is not AWS); the server
here is moto's on loopback, so what is checked is the store's side: settings, addressing, prefixes.
"""

from __future__ import annotations

import pytest

from cure.store import open_store

ACCESS, SECRET = "cure-test-access", "cure-test-secret"


@pytest.fixture(scope="module")
def endpoint():
    from minio import Minio
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    raw = Minio(f"127.0.0.1:{port}", ACCESS, SECRET, secure=False)
    raw.make_bucket("cure")
    raw.make_bucket("mlpipeline")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.parametrize(("uri", "env_names"), [
    ("s3://cure", ("CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY")),  # Secret cure-minio, as is
    ("s3://mlpipeline/cure", ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")),  # KFP's keys mapped to the fallback names
])
def test_checkpoint_round_trip(endpoint, tmp_path, uri, env_names):
    env = {"CURE_S3_ENDPOINT": endpoint, "CURE_S3_REGION": "us-east-1", env_names[0]: ACCESS, env_names[1]: SECRET}
    store = open_store(uri, env=env)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    store.commit_checkpoint("exp", "round-0001", model)
    again = open_store(uri, env=env)
    assert again.latest_checkpoint("exp") == "round-0001"
    again.fetch_checkpoint("exp", "latest", tmp_path / "back")
    assert (tmp_path / "back" / "weights.bin").read_bytes() == (model / "weights.bin").read_bytes()
    from minio import Minio

    host = endpoint.split("://")[1]
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    keys = [o.object_name for o in Minio(host, ACCESS, SECRET, secure=False).list_objects(bucket, recursive=True)]
    assert keys and all(k.startswith(f"{prefix}/exp/" if prefix else "exp/") for k in keys), keys
