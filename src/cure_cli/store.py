"""``cure store repair`` / ``cure store unlock``: an experiment's ``latest`` and lease in the store (:mod:`cure.experiment`)."""

from __future__ import annotations

from typing import Any

from cure.experiment import break_lease, repair_latest
from cure.store import open_store


def _store_args(p: Any) -> None:
    p.add_argument("--store", required=True, help="the store URI (file://DIR or s3://bucket[/prefix])")
    p.add_argument("--experiment", required=True, help="the experiment name (pipeline.experiment; local runs: local-PRESET)")


def configure_repair(p: Any) -> None:
    _store_args(p)
    p.add_argument("--checkpoint", help="point latest at this checkpoint (default: the complete one of the highest round)")


def run_repair(args: Any, cfg: Any) -> int:
    store = open_store(args.store)
    name, round_ = repair_latest(store, args.experiment, args.checkpoint)
    print(f"latest of experiment {args.experiment!r} now names {name} (round {round_}); the next run continues from "
          "there and drops the records of later rounds")
    return 0


def configure_unlock(p: Any) -> None:
    _store_args(p)


def run_unlock(args: Any, cfg: Any) -> int:
    lease = break_lease(open_store(args.store), args.experiment)
    print(f"cleared the lease of experiment {args.experiment!r}" + (f" (held by run {lease['run_id']})" if lease else
                                                                     " (there was none)"))
    return 0
