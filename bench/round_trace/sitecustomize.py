"""Timing probe for ``bench/bench_round.py``, loaded by a task process through ``PYTHONPATH`` (as ``sitecustomize``).

Does nothing unless ``CURE_ROUND_TRACE`` names a file. Then it appends JSON lines to that file:

* ``{"ev": "start", "t": ...}`` when the interpreter reaches site initialisation;
* ``{"ev": LABEL, "t0": ..., "t1": ..., "imports": s}`` around each call of the functions in ``PROBES`` (wrapped
  when their module is first imported), with the seconds spent importing modules inside that call;
* ``{"ev": "import", "t0": ..., "t1": ...}`` for every outermost import of a module not yet loaded.

Imports are timed around ``importlib._bootstrap._find_and_load``, which both the ``import`` statement and
``importlib.import_module`` reach for a module that is not in ``sys.modules``. Every line is written (and flushed)
when its event ends: a task may leave through ``os._exit`` and skip ``atexit``.
"""

from __future__ import annotations

import functools
import importlib._bootstrap as _bootstrap
import json
import os
import sys
import time

PROBES = {
    "kfp.dsl.executor": {"Executor.execute": "body"},
    "cure.rollout.hf": {"HFEngine.__init__": "model_load", "HFEngine.generate": "work"},
    "cure.train.engines": {"build_engine": "model_load"},
    "cure.train.stage": {"compute_logprobs": "work", "_run_update": "work"},
    "cure.train.checkpoint": {"save_checkpoint": "save"},
    "cure.stages": {"_copy_model": "copy"},
    "cure.execute": {"execute_rollouts": "work"},
    "cure.reward_stage": {"write_rewards": "work"},
    "cure.experiment": {"upsert_record": "store", "promote": "store"},
}

_path = os.environ.get("CURE_ROUND_TRACE")
_out = None
_depth = 0
_import_s = 0.0  # seconds spent in outermost imports so far


def _emit(rec: dict) -> None:
    _out.write(json.dumps(rec) + "\n")
    _out.flush()


def _timed(label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0, i0 = time.time(), _import_s
        try:
            return fn(*args, **kwargs)
        finally:
            _emit({"ev": label, "t0": t0, "t1": time.time(), "imports": _import_s - i0})

    return wrapper


def _patch(module) -> None:
    for dotted, label in PROBES.get(module.__name__, {}).items():
        owner, _, attr = dotted.rpartition(".")
        target = getattr(module, owner) if owner else module
        if hasattr(target, attr):
            setattr(target, attr, _timed(label, getattr(target, attr)))


def _install() -> None:
    original = _bootstrap._find_and_load

    def find_and_load(name, import_):
        global _depth, _import_s
        if _depth:
            module = original(name, import_)
        else:
            _depth += 1
            t0 = time.time()
            try:
                module = original(name, import_)
            finally:
                _depth -= 1
                t1 = time.time()
                _import_s += t1 - t0
                _emit({"ev": "import", "name": name, "t0": t0, "t1": t1})
        if name in PROBES and not getattr(module, "_cure_round_trace", False):
            module._cure_round_trace = True
            _patch(module)
        return module

    _bootstrap._find_and_load = find_and_load


if _path:
    _out = open(_path, "a", buffering=1)  # noqa: SIM115 (open for the life of the process)
    _emit({"ev": "start", "t": time.time(), "pid": os.getpid(), "argv0": sys.argv[0] if sys.argv else ""})
    _install()
