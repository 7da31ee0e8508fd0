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

import json
import logging
import os
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cure.store import (
    MANIFEST_NAME,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoreError,
    StoreUnavailable,
    open_store,
    sha256_file,
)

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


def repair_command(store: Store, experiment: str) -> str:
    return f"cure store repair --store {store.uri} --experiment {experiment}"


def latest_round(store: Store, experiment: str) -> tuple[str | None, int]:
    """(name, global round) of the experiment's latest complete checkpoint; (None, 0) when it has none.

    A missing ``latest`` while complete checkpoints exist, or a damaged one, is an error naming the recovery
    command, never a fresh start from the base model (which would overwrite the experiment's rounds)."""
    try:
        name = store.latest_checkpoint(experiment)
        manifest = None if name is None else store.checkpoint_manifest(experiment, "latest")
    except StoreUnavailable:
        raise
    except StoreError as e:
        raise StoreError(
            f"experiment {experiment!r}: its latest pointer is damaged ({e}). Point it at the newest complete "
            f"checkpoint with `{repair_command(store, experiment)}`, then run again"
        ) from e
    if name is None or manifest is None:
        found = store.list_checkpoints(experiment)
        if found:
            raise StoreError(
                f"experiment {experiment!r} has checkpoints ({', '.join(found[-3:])}) but no latest pointer "
                f"({store.describe(experiment + '/latest')} is missing); refusing to start again from the base model. "
                f"Point it at the newest complete checkpoint with `{repair_command(store, experiment)}`, then run again"
            )
        return None, 0
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


def is_eval_round(round_: int, eval_every: int, total_rounds: int) -> bool:
    """Round 0 (the starting model), every ``eval_every`` global rounds, and the last round are evaluated."""
    return round_ == 0 or round_ % eval_every == 0 or round_ == total_rounds


def plan_run(store: Store, experiment: str, total_rounds: int, segment: int, eval_every: int | None = None) -> dict[str, Any]:
    """The rounds this run trains, from the experiment's state; drops records of rounds after ``latest``.

    A round is done only when it is promoted *and*, on an evaluation round, its evaluation is in the history: when
    the latest round's evaluation is missing (a run stopped between its promotion and its evaluation), the plan's
    ``evaluate_start`` makes this run evaluate its starting model first, even when no round is left to train.
    """
    if total_rounds < 0 or segment < 1:
        raise ValueError(f"total_rounds must be >= 0 (got {total_rounds}) and the segment >= 1 (got {segment})")
    name, done = latest_round(store, experiment)
    history: list[dict[str, Any]] = []
    for records in (HISTORY, ROUNDS):
        old = _records(store, experiment, records)
        kept = [r for r in old if r.get("round", 0) <= done]
        if len(kept) != len(old):
            log.warning("dropping %d %s records after round %d (a run that stopped before promoting them)",
                        len(old) - len(kept), records, done)
            store.put_json(f"{experiment}/{records}", kept)
        if records == HISTORY:
            history = kept
    start = done + 1
    last = min(done + segment, total_rounds)
    evaluated = {r.get("round") for r in history}
    missing = eval_every is not None and done <= total_rounds and is_eval_round(done, eval_every, total_rounds) \
        and done not in evaluated
    if missing and done > 0:
        log.warning("round %d of experiment %s was promoted but never evaluated: this run evaluates it first",
                    done, experiment)
    return {"experiment": experiment, "checkpoint": name, "start": start, "last": last, "total": total_rounds,
            "active": last >= start or missing, "fresh": name is None, "evaluate_start": missing}


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


# --- the experiment's lease: one run at a time ---------------------------------------------------------------

LEASE = "lease.json"


class LeaseHeld(StoreError):
    """Another run of the same experiment holds its lease."""


def _lease(store: Store, experiment: str) -> tuple[dict[str, Any] | None, str | None]:
    key = f"{experiment}/{LEASE}"
    try:
        found = store.get_versioned(key)
    except StoreUnavailable:
        raise
    except StoreError as e:
        raise StoreError(f"experiment {experiment!r}: its lease {store.describe(key)} is damaged ({e}); when no run of "
                         f"it is running, clear it with `{unlock_command(store, experiment)}`") from e
    if found is None:
        return None, None
    data, version = found
    try:
        lease = json.loads(data)
        if not isinstance(lease, dict) or not isinstance(lease.get("run_id"), str):
            raise ValueError("no run_id")
        float(lease.get("expires", 0))
    except (ValueError, TypeError) as e:
        raise StoreError(f"experiment {experiment!r}: its lease {store.describe(key)} is not a lease record ({e}); when "
                         f"no run of it is running, clear it with `{unlock_command(store, experiment)}`") from e
    return lease, version


def unlock_command(store: Store, experiment: str) -> str:
    return f"cure store unlock --store {store.uri} --experiment {experiment}"


def _held_message(store: Store, experiment: str, lease: dict[str, Any]) -> str:
    until = datetime.fromtimestamp(float(lease["expires"]), timezone.utc).isoformat(timespec="seconds")
    return (f"experiment {experiment!r} is in use by another run (run id {lease['run_id']}, on {lease.get('holder', '?')}, "
            f"since {lease.get('taken_at', '?')}, lease until {until}) in {store.uri}: two runs of one experiment would "
            f"mix their rounds, so this run stops before doing anything. Wait for that run to finish (recurring runs: "
            f"max concurrency 1), or, if it is gone, `{unlock_command(store, experiment)}`")


def _lease_record(run_id: str, ttl_s: float, now: float, taken_at: str | None = None) -> bytes:
    record = {"run_id": run_id, "holder": socket.gethostname(), "pid": os.getpid(),
              "taken_at": taken_at or datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
              "renewed_at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
              "expires": now + ttl_s}
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def take_lease(store: Store, experiment: str, run_id: str, ttl_s: float, now: float | None = None) -> None:
    """Take the experiment's lease for ``run_id`` (a conditional write), or raise :class:`LeaseHeld` when another
    run holds it and it has not expired. Taking it again for the same run renews it."""
    key = f"{experiment}/{LEASE}"
    for _ in range(3):
        t = time.time() if now is None else now
        lease, version = _lease(store, experiment)
        if lease is not None and lease["run_id"] != run_id and not lease.get("released") and float(lease["expires"]) > t:
            raise LeaseHeld(_held_message(store, experiment, lease))
        if lease is not None and lease["run_id"] != run_id and not lease.get("released"):
            log.warning("taking over the expired lease of run %s on experiment %s", lease["run_id"], experiment)
        taken = lease.get("taken_at") if lease is not None and lease["run_id"] == run_id else None
        try:
            store.put_if(key, _lease_record(run_id, ttl_s, t, taken), version)
            return
        except PreconditionFailed:
            continue  # another run wrote meanwhile (or our own retried write landed): read it again
    lease, _ = _lease(store, experiment)
    if lease is not None and lease["run_id"] == run_id:
        return
    raise LeaseHeld(_held_message(store, experiment, lease) if lease else f"experiment {experiment!r}: lease contended")


def check_lease(store: Store, experiment: str, run_id: str, ttl_s: float) -> None:
    """Before a write to the experiment's state: this run must still hold the lease (renewed here), else stop."""
    lease, _ = _lease(store, experiment)
    if lease is None or lease["run_id"] != run_id or lease.get("released"):
        who = "nobody (it was cleared)" if lease is None or lease.get("released") else f"run {lease['run_id']}"
        raise LeaseHeld(
            f"this run (run id {run_id}) no longer holds the lease of experiment {experiment!r} in {store.uri}; it is "
            f"held by {who}. This run stops without writing, so the experiment's records stay those of one run"
        )
    take_lease(store, experiment, run_id, ttl_s)


def release_lease(store: Store, experiment: str, run_id: str) -> bool:
    """Release the lease if this run holds it (a conditional write); True when released."""
    lease, version = _lease(store, experiment)
    if lease is None or lease["run_id"] != run_id or lease.get("released"):
        return False
    record = {**lease, "released": True, "expires": 0}
    try:
        store.put_if(f"{experiment}/{LEASE}", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), version)
    except PreconditionFailed:
        return False
    return True


def break_lease(store: Store, experiment: str) -> dict[str, Any] | None:
    """Clear the lease whoever holds it (the operator's `cure store unlock`); returns the lease it cleared."""
    key = f"{experiment}/{LEASE}"
    try:
        lease, _ = _lease(store, experiment)
    except StoreUnavailable:
        raise
    except StoreError:
        lease = {"run_id": "(damaged)"}
    store.delete(key)
    return lease


def repair_latest(store: Store, experiment: str, checkpoint: str | None = None) -> tuple[str, int]:
    """Point ``latest`` at ``checkpoint`` or else the complete checkpoint of the highest round; returns (name, round)."""
    names = store.list_checkpoints(experiment)
    if checkpoint is None:
        rounds_ = []
        for n in names:
            try:
                m = store.checkpoint_manifest(experiment, n)
            except StoreError as e:
                log.warning("skipping checkpoint %s: %s", n, e)
                continue
            r = m.get("metadata", {}).get("round", round_of(n))
            if r is not None:
                rounds_.append((int(r), n))
        if not rounds_:
            raise StoreError(f"experiment {experiment!r} has no complete checkpoint in {store.uri}: nothing to point "
                             "latest at (start the experiment afresh)")
        checkpoint = max(rounds_)[1]
    elif checkpoint not in names:
        raise StoreError(f"experiment {experiment!r} has no complete checkpoint {checkpoint!r} in {store.uri} "
                         f"(complete: {', '.join(names) or 'none'})")
    manifest = store.set_latest(experiment, checkpoint)
    return checkpoint, int(manifest.get("metadata", {}).get("round", round_of(checkpoint) or 0))
