"""Skip the interpreter's teardown once a pipeline task has succeeded.

A process that imported torch and transformers spends about a second tearing its modules down at exit (2-core box,
2026-11-30: 1.0 s after the last line of a rollout or train task, against 0.03 s with this). The demo starts two such
tasks per round, so that second is paid 25 times in a run. Nothing in that teardown matters to a finished task: its
outputs are written, its files closed, its logs flushed here.

:func:`arm` (or :func:`on_success` around a component's step function) registers an exit hook that flushes logging and
the standard streams and ends the process with status 0 without the teardown. It is armed only where that is safe:

* only in KFP's executor (``python -m kfp.dsl.executor_main``), whose exit status after a normal return is 0; never
  in a test run or a CLI, whose status would be lost;
* the hook steps aside (normal teardown, normal status) when the process is ending on an uncaught exception, for
  example the executor failing to write its outputs after the body returned;
* and when the process still has child processes (a vLLM engine, a sandbox), whose own shutdown it must not cut.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXECUTOR_MAIN = "kfp/dsl/executor_main.py"


def _main_file() -> str:
    main = sys.modules.get("__main__")
    return str(getattr(main, "__file__", "") or "")


def _has_children() -> bool:
    """True when this process has a living child; also True where that cannot be read (not Linux)."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    try:
        return any((t / "children").read_text().strip() for t in tasks.iterdir())
    except OSError:
        return True


def _hook() -> None:
    if getattr(sys, "last_value", None) is not None or getattr(sys, "last_exc", None) is not None:
        return  # ending on an uncaught exception: keep its status (1) and the normal teardown
    if _has_children():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


_armed = False


def arm(main_file: str = EXECUTOR_MAIN) -> bool:
    """Register the exit hook (once) if this process runs ``main_file`` (a path suffix); returns whether it is armed.

    ``CURE_QUICK_EXIT=0`` turns it off."""
    global _armed
    if os.environ.get("CURE_QUICK_EXIT", "1") == "0" or not _main_file().replace(os.sep, "/").endswith(main_file):
        return False
    if not _armed:
        atexit.register(_hook)  # registered last, so it runs first among the exit hooks
        _armed = True
    return True


def on_success(fn: F) -> F:
    """``fn``, arming the hook when it returns (a component's step function: the task's work is then done)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        arm()
        return out

    return wrapper  # type: ignore[return-value]
