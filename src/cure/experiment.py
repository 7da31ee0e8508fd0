"""An experiment's state in the store, which makes a training a chain of runs that continue exactly.

Layout under ``<store>/<experiment>/`` (see also :mod:`cure.store`):

- ``checkpoints/round-NNNN/``: promoted checkpoints (model, trainer and optimizer state, ``cure-manifest.json``
  with ``metadata.round``); ``latest`` names the newest complete one, so its round is where the next run starts;
- ``history.json``: one evaluation entry per evaluated global round (round 0 = the starting model);
- ``rounds.json``: one training record per global round, ``{"round", "rollout", "execute", "reward", "train",
  "seconds"}`` (each stage's metrics);
- ``report/``: the experiment's report, rewritten after every evaluation.

A run plans its segment from ``latest`` (:func:`plan_run`): rounds ``latest + 1`` up to ``min(latest + segment,
total)``. Records of rounds after ``latest`` (left by a run that died before promoting them) are dropped when the
next run starts, so every global round appears once in the history and in ``rounds.json``, whatever failed.
Checkpoints promoted only to end a segment (not a save point) are deleted once a newer one is ``latest``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from cure.store import MANIFEST_NAME, ObjectNotFound, Store, StoreError, open_store, sha256_file

log = logging.getLogger("cure.experiment")

HISTORY = "history.json"
ROUNDS = "rounds.json"
_ROUND_RE = re.compile(r"^round-(\d+)$")


def checkpoint_name(round_: int) -> str:
    return f"round-{round_:04d}"


def round_of(name: str) -> int | None:
    m = _ROUND_RE.match(name)
    return int(m.group(1)) if m else None


def check_store_uri(uri: str) -> None:
    """A ``file://`` store inside a cluster pod writes to the pod's temporary disk: refuse it there."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not uri.strip().startswith("s3://"):
        raise StoreError(
            f"pipeline__store_uri={uri!r} is a folder, but this task runs in a Kubernetes pod, whose disk is gone "
            "when the pod ends: checkpoints and history would be lost. Use the S3 store (s3://cure, the compiled "
            "default) with the store Secret mapped into the pods (cure compile --store-secret)."
        )


def latest_round(store: Store, experiment: str) -> tuple[str | None, int]:
    """(name, global round) of the experiment's latest complete checkpoint; (None, 0) when it has none."""
    name = store.latest_checkpoint(experiment)
    if name is None:
        return None, 0
    manifest = store.checkpoint_manifest(experiment, "latest")
    r = manifest.get("metadata", {}).get("round", round_of(name))
    if r is None:
        raise StoreError(
            f"the latest checkpoint {name!r} of experiment {experiment!r} has no global round (metadata.round) "
            "and its name is not round-NNNN: continue it under a new experiment name"
        )
    return name, int(r)


def _records(store: Store, experiment: str, name: str) -> list[dict[str, Any]]:
    try:
        data = store.get_json(f"{experiment}/{name}")
    except ObjectNotFound:
        return []
    if not isinstance(data, list):
        raise StoreError(f"{store.describe(f'{experiment}/{name}')} is not a list of round records")
    return data


def read_history(store: Store, experiment: str) -> list[dict[str, Any]]:
    return _records(store, experiment, HISTORY)


def read_rounds(store: Store, experiment: str) -> list[dict[str, Any]]:
    return _records(store, experiment, ROUNDS)


def upsert_record(store: Store, experiment: str, name: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Insert ``entry`` into ``<experiment>/<name>`` keeping one record per round, sorted (a retry replaces)."""
    records = [r for r in _records(store, experiment, name) if r.get("round") != entry["round"]]
    records.append(entry)
    records.sort(key=lambda r: r["round"])
    store.put_json(f"{experiment}/{name}", records)
    return records


def plan_run(store: Store, experiment: str, total_rounds: int, segment: int) -> dict[str, Any]:
    """The rounds this run trains, from the experiment's state; drops records of rounds after ``latest``."""
    if total_rounds < 0 or segment < 1:
        raise ValueError(f"total_rounds must be >= 0 (got {total_rounds}) and the segment >= 1 (got {segment})")
    name, done = latest_round(store, experiment)
    for records in (HISTORY, ROUNDS):
        old = _records(store, experiment, records)
        kept = [r for r in old if r.get("round", 0) <= done]
        if len(kept) != len(old):
            log.warning("dropping %d %s records after round %d (a run that stopped before promoting them)",
                        len(old) - len(kept), records, done)
            store.put_json(f"{experiment}/{records}", kept)
    start = done + 1
    last = min(done + segment, total_rounds)
    return {"experiment": experiment, "checkpoint": name, "start": start, "last": last, "total": total_rounds,
            "active": last >= start, "fresh": name is None}


def promote(store: Store, experiment: str, model_dir: str | Path, round_: int, keep: bool) -> str:
    """Commit ``model_dir`` as checkpoint ``round-NNNN`` and move ``latest`` to it, idempotently.

    Promoting the same files again (a retried task) is not an error. ``keep`` marks a save point; a checkpoint
    that only ended a segment is deleted once a newer checkpoint is ``latest``.
    """
    name = checkpoint_name(round_)
    previous, previous_round = latest_round(store, experiment)
    if previous is not None and previous_round > round_:
        raise StoreError(
            f"experiment {experiment!r} is already at round {previous_round} ({previous}); refusing to move latest "
            f"back to round {round_}. Two runs of the same experiment ran at once: use max concurrency 1."
        )
    prefix = store.checkpoint_key(experiment, name)
    try:
        manifest = store.checkpoint_manifest(experiment, name)
    except StoreError:  # none yet (ObjectNotFound), or an interrupted upload: commit again
        manifest = None
    metadata = {"round": round_, "keep": bool(keep)}
    if manifest is not None and _same_files(manifest, Path(model_dir)):
        if previous != name:  # the earlier attempt died between the manifest and the pointer: commit again
            store.commit_checkpoint(experiment, name, model_dir, metadata=metadata, overwrite=True)
        else:
            log.info("checkpoint %s is already promoted with the same files", store.describe(prefix))
    else:
        store.commit_checkpoint(experiment, name, model_dir, metadata=metadata, overwrite=manifest is not None)
    if previous is not None and previous != name:
        try:
            old = store.checkpoint_manifest(experiment, previous)
        except StoreError:
            old = None
        if old is not None and not old.get("metadata", {}).get("keep", True):
            store.delete_prefix(store.checkpoint_key(experiment, previous))
            log.info("deleted %s: it only ended a segment and %s is now latest", previous, name)
    return prefix


def _same_files(manifest: dict[str, Any], model_dir: Path) -> bool:
    files = {p.relative_to(model_dir).as_posix(): p for p in model_dir.rglob("*") if p.is_file()}
    if set(files) != set(manifest["files"]) - {MANIFEST_NAME}:
        return False
    return all(sha256_file(files[rel]) == entry["sha256"] for rel, entry in manifest["files"].items())


def open_checked(uri: str) -> Store:
    check_store_uri(uri)
    return open_store(uri)
