"""Entry point of one sandbox pod of the cluster Job: run one shard of rollouts, print its execution records.

The pod itself is the gVisor sandbox (``runtimeClassName: gvisor``), so the worker runs without a nested
``runsc`` (``isolation none`` inside an outer sandbox, which ``CURE_SANDBOX_OUTER`` records). The pod has no
network at all (NetworkPolicy deny-all) and no credentials: its shard arrives as a file of a mounted ConfigMap
(gzip JSON Lines), chosen by ``JOB_COMPLETION_INDEX``, and its results leave through the container log between
two marker lines, which the launcher (:mod:`cure.sandbox.k8s`) reads through the Kubernetes API. Results over
``--log-limit`` bytes (the API returns only the current, unrotated log file) are replaced by a "too large" line
with their size, and the launcher splits the shard.

    python -m cure.sandbox.shard --dir /shard
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from cure.execute import execute_rollouts

BEGIN = "----- cure-sandbox-results-begin -----"
END = "----- cure-sandbox-results-end -----"
TOO_LARGE = "----- cure-sandbox-results-too-large"


class ResultsTooLarge(ValueError):
    """A pod's results did not fit in its log; ``size`` is the block's length in bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the shard's results block is {size} bytes, over the pod's log limit")
        self.size = size


def encode_records(records: list[dict]) -> bytes:
    """gzip JSON Lines (what a shard ConfigMap holds as binaryData, base64-encoded by the API)."""
    return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0)


def decode_records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(data).decode().splitlines() if line.strip()]


def results_block(records: list[dict]) -> str:
    """The log block carrying a shard's results: base64 of gzip JSON Lines between marker lines."""
    payload = base64.b64encode(encode_records(records)).decode()
    lines = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def parse_results_block(log_text: str) -> list[dict]:
    """Inverse of :func:`results_block`; raises ValueError naming what is missing, ResultsTooLarge for the marker."""
    if TOO_LARGE in log_text:
        raise ResultsTooLarge(int(log_text.split(TOO_LARGE, 1)[1].split()[0]))
    if BEGIN not in log_text or END not in log_text:
        raise ValueError("the pod log has no complete results block (did the shard finish?)")
    body = log_text.split(BEGIN, 1)[1].split(END, 1)[0]
    return decode_records(base64.b64decode("".join(body.split())))


def _reap_program_orphans() -> None:
    """As pid 1 of a sandbox container, reap exited processes of the programs (each worker gives its programs a
    uid of its own, never root) that were re-parented here (the workers kill them; without this they would stay as
    zombies). The worker processes themselves (root) are left to the pool that waits for them."""
    import threading
    import time

    def loop() -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is not None and info.si_uid != 0:
                try:
                    os.waitpid(info.si_pid, 0)
                except ChildProcessError:
                    pass
                continue
            time.sleep(0.01)

    threading.Thread(target=loop, daemon=True, name="reap-orphans").start()


def _close_tmp(path: str = "/tmp") -> None:
    """As root and pid 1 of a sandbox container, make ``path`` writable by root only.

    Kubernetes creates an emptyDir world-writable (0777): programs (uid ``nobody``) could then write there, next to
    every other program's temp dir. Each program gets its own temp dir below it from the worker instead.
    """
    mode = os.stat(path).st_mode & 0o7777
    if mode & 0o022:
        os.chmod(path, 0o755)
        logging.getLogger("cure.sandbox.shard").info("%s was mode %o; now 755 (programs get their own dirs)", path, mode)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cure.sandbox.shard")
    ap.add_argument("--dir", default="/shard", help="folder holding shard-<index>.jsonl.gz")
    ap.add_argument("--index", type=int, default=None, help="shard index (default: $JOB_COMPLETION_INDEX)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--memory-mb", type=int, default=1024)
    ap.add_argument("--output-limit", type=int, default=1 << 20)
    ap.add_argument("--wall-factor", type=float, default=3.0)
    ap.add_argument("--log-limit", type=int, default=8 << 20, help="largest results block printed (bytes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    index = args.index if args.index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    rollouts = decode_records((Path(args.dir) / f"shard-{index}.jsonl.gz").read_bytes())
    os.environ.setdefault("CURE_SANDBOX_OUTER", "gvisor-pod")
    if os.getpid() == 1 and os.getuid() == 0:
        _reap_program_orphans()
        _close_tmp()

    # The sandbox image holds the standard library and cure's code only: no pydantic, so no ExecuteConfig here.
    cfg = SimpleNamespace(isolation="none", workers=args.workers, memory_mb=args.memory_mb,
                          output_limit_bytes=args.output_limit, wall_factor=args.wall_factor)
    records = execute_rollouts(rollouts, cfg, progress=True)  # type: ignore[arg-type]
    block = results_block(records)
    if len(block) > args.log_limit:
        logging.getLogger("cure.sandbox.shard").warning(
            "results of shard %d are %d bytes, over --log-limit %d: the launcher will split the shard",
            index, len(block), args.log_limit)
        block = f"{TOO_LARGE} {len(block)} -----\n"
    sys.stdout.write(block)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
