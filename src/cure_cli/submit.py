"""``cure submit``: a compiled pipeline to a KFP endpoint, once, until the experiment is done, or on a schedule
(:mod:`cure_pipelines.submit`)."""

from __future__ import annotations

import argparse
from typing import Any


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80")
    p.add_argument("--package", default="build/pipelines/cure-training.yaml", help="compiled pipeline YAML")
    p.add_argument("--experiment-name", default="cure", help="KFP experiment")
    p.add_argument("--run-name", help="run name (default: cure-<UTC time>)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter, converted to its declared type (repeatable)")
    p.add_argument("--wait", action="store_true", help="wait for the run; exit 1 unless it succeeded")
    p.add_argument("--until-done", action="store_true",
                   help="chain runs until the experiment reaches total_rounds (reads its state from the store)")
    p.add_argument("--timeout", type=float, default=0, help="--wait/--until-done: seconds per run (0: none)")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between status checks")
    p.add_argument("--recurring", metavar="CRON", help="create a recurring run instead: 5-field cron or KFP's 6-field "
                   "one (max concurrency 1, no catch-up)")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--token", help="bearer token for a multi-user Kubeflow (default: $KF_PIPELINES_TOKEN)")
    p.add_argument("--api-timeout", type=float, default=30.0,
                   help="seconds to connect and to wait for each answer of the KFP API (default 30)")
    p.add_argument("--api-attempts", type=int, default=5,
                   help="attempts per API request on transient errors (connection refused or reset, timeouts, 5xx)")




def run(args: argparse.Namespace, cfg: Any) -> int:
    from cure_pipelines.submit import submit

    return submit(args, cfg)
