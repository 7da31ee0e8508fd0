"""What every part of a KFP run that talks to Kubernetes shares: the run's label, the custom job kinds it may
create, and turning a stop signal into cleanup.

The sandbox launcher (:mod:`cure.sandbox.k8s`) and the training launchers (:mod:`cure.train.launch`,
:mod:`cure.train.k8s`, :mod:`cure.train.trainjob`) label what they create with :func:`run_labels`, so the run's exit
handler (:func:`cure.sandbox.k8s.delete_run_objects`) can delete what a killed step left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: The label every Job, PyTorchJob and TrainJob of a KFP run carries (the run's id, ``CURE_RUN_ID`` in the
#: launching pod from its ``pipeline/runid`` label), so the run's exit handler can delete what a killed step left.
RUN_LABEL = "cure/run"


class CustomKind(NamedTuple):
    """A custom resource the train step may create: its API group, version, plural and kind."""

    group: str
    version: str
    plural: str
    kind: str


PYTORCHJOB = CustomKind("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")  # Kubeflow Training Operator
TRAINJOB = CustomKind("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")  # Kubeflow Trainer v2


def run_labels(run_id: str | None = None) -> dict[str, str]:
    """``{RUN_LABEL: run id}`` for objects a KFP run creates (default: ``CURE_RUN_ID``); none outside a run."""
    run_id = os.environ.get("CURE_RUN_ID", "") if run_id is None else run_id
    return {RUN_LABEL: run_id} if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", run_id) else {}


@contextlib.contextmanager
def cleanup_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into ``SystemExit(128 + signal)`` so ``finally`` blocks (the cleanup) run.

    Once one signal arrived, further ones are ignored until the block is left, so the cleanup is not cut short.
    Only the main thread can set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        log.warning("signal %d: deleting the sandbox Job and its ConfigMaps before exiting", signum)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
