"""Helpers shared by the sandbox tests: rollout records and a check that no process outlives a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


def rollout(codes, gt, gen=(), time_limit_s=1.0, task_id="t0") -> dict:
    """A rollout record; tests are (input, output) pairs or None."""

    def t(x):
        return None if x is None else {"input": x[0], "output": x[1]}

    return {"task_id": task_id, "codes": list(codes), "gt_tests": [t(x) for x in gt], "tests": [t(x) for x in gen], "time_limit_s": time_limit_s}


def _ours() -> set[int]:
    """Our descendants plus every runsc / sandbox process that names a cure-sandbox folder."""
    pids = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("cure-sandbox-" in a for a in p.info["cmdline"] or []):
                pids.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@contextmanager
def no_leftover_processes() -> Iterator[None]:
    """Fail if a process started inside the block (sandbox, worker, runner, program) is still alive after it."""
    before = _ours()
    yield
    for _ in range(50):
        left = _ours() - before
        alive = []
        for pid in left:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(proc.cmdline())[:200]}")
            except psutil.NoSuchProcess:
                continue
        if not alive:
            return
        import time

        time.sleep(0.1)
    raise AssertionError("processes left behind:\n" + "\n".join(alive))
