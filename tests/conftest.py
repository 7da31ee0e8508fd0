"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    """An S3-compatible server (moto) on loopback: the store's S3 code path without a MinIO server."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()[1]
    server.stop()


#: Markers that make a test part of the slow tier by themselves: a gVisor sandbox, DeepSpeed, built images.
SLOW_BY_NATURE = ("gvisor", "deepspeed", "containers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test-fast`` (``-m "not slow"``) leaves out whatever needs gVisor, DeepSpeed or the images too."""
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_BY_NATURE) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
