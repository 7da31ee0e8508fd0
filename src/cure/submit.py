"""``cure submit``: runs and recurring runs on a KFP endpoint that mean what they say.

- Parameters are converted to the types the compiled pipeline declares (``resume=true`` becomes a boolean, an
  integer stays an integer, a string is never re-parsed), and an unknown name is an error.
- ``--wait`` polls the run until it ends and exits non-zero unless it SUCCEEDED (FAILED, CANCELED, a timeout);
  it prints the run's URL and the experiment's latest evaluation from the store when the store is reachable.
- ``--until-done`` chains runs of the training pipeline until the experiment reaches ``total_rounds``.
- ``--recurring`` takes a standard 5-field cron (``m h dom mon dow``) or KFP's 6-field one (seconds first),
  validates it and submits KFP's form.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import yaml

FINAL_OK = {"SUCCEEDED"}
FINAL_BAD = {"FAILED", "CANCELED", "CANCELLED", "SKIPPED", "ERROR"}


class SubmitError(RuntimeError):
    """A submission or a run went wrong; the message says which run and what to do."""


# --- parameters ---------------------------------------------------------------------------------------------


def package_parameters(package: str | Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's parameters: name -> {"parameterType": ..., "defaultValue": ...}."""
    path = Path(package)
    if not path.is_file():
        raise SubmitError(f"pipeline package {path} does not exist: run `cure compile --out {path.parent}` first")
    spec = next(iter(yaml.safe_load_all(path.read_text())))
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def typed_value(name: str, text: str, kind: str) -> Any:
    """``text`` as the KFP parameter type ``kind``; errors name the parameter."""
    try:
        if kind == "STRING":
            return text
        if kind == "BOOLEAN":
            low = text.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError("expected true or false")
        if kind == "NUMBER_INTEGER":
            value = float(text) if re.fullmatch(r"-?\d+\.0*", text.strip()) else int(text)
            return int(value)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind in ("LIST", "STRUCT"):
            value = yaml.safe_load(text)
            if not isinstance(value, list if kind == "LIST" else dict):
                raise ValueError(f"expected a {'list' if kind == 'LIST' else 'mapping'}, e.g. {'[1, 2]' if kind == 'LIST' else '{a: 1}'}")
            return value
    except (ValueError, yaml.YAMLError) as e:
        raise SubmitError(f"--param {name}={text!r}: not a valid {kind}: {e}") from None
    return text


def typed_params(items: list[str], declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``NAME=VALUE`` items converted to the declared types."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SubmitError(f"--param {item!r}: expected NAME=VALUE")
        if declared and name not in declared:
            close = [n for n in declared if name.split("__")[-1] in n][:5]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SubmitError(f"--param {name}: the pipeline has no such parameter{hint}")
        out[name] = typed_value(name, text, declared.get(name, {}).get("parameterType", "STRING")) if declared else text
    return out


# --- cron ---------------------------------------------------------------------------------------------------

_CRON_FIELDS = [("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7)]
_NAMES = {4: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
          5: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]}


def kfp_cron(expr: str) -> str:
    """A 5-field cron (``m h dom mon dow``) or KFP's 6-field one (``s m h dom mon dow``) -> KFP's 6-field form.

    KFP (robfig/cron) reads six fields with seconds first, so ``0 2 * * *`` given as is would mean "second 0 of
    minute 2 of every hour"; here it becomes ``0 0 2 * * *`` (02:00 every day).
    """
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise SubmitError(f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week) or KFP's 6 "
                          "(second first); e.g. '0 2 * * *' for 02:00 every day")
    for i, (field, (what, lo, hi)) in enumerate(zip(fields, _CRON_FIELDS)):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                raise SubmitError(f"cron {expr!r}: {what} {field!r}: the step after / must be a number")
            if base == "*" or (base == "?" and i in (3, 5)):
                continue
            for bound in base.split("-", 1):
                if not lo <= _cron_value(i, bound) <= hi:
                    raise SubmitError(f"cron {expr!r}: {what} {field!r} is not in {lo}-{hi}")
    return " ".join(fields)


def _cron_value(i: int, text: str) -> int:
    names = _NAMES.get(i, [])
    if text.upper() in names:
        return names.index(text.upper()) + (1 if i == 4 else 0)
    return int(text) if text.isdigit() else -1


# --- runs ---------------------------------------------------------------------------------------------------


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def wait_for_run(client: Any, run_id: str, timeout_s: float, poll_s: float = 15.0) -> str:
    """The run's final state (SUCCEEDED, FAILED, CANCELED, ...); raises :class:`SubmitError` on a timeout."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    while True:
        run = client.get_run(run_id)
        state = str(getattr(run, "state", None) or "").upper()
        if state in FINAL_OK | FINAL_BAD:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise SubmitError(f"run {run_id} is still {state or 'pending'} after {timeout_s:.0f} s (--timeout)")
        time.sleep(poll_s)


def experiment_state(store_uri: str, experiment: str) -> tuple[int, dict[str, Any] | None]:
    """(latest global round, latest evaluation entry) of an experiment in the store."""
    from cure.experiment import latest_round, read_history
    from cure.store import open_store

    store = open_store(store_uri)
    _, done = latest_round(store, experiment)
    history = read_history(store, experiment)
    return done, (history[-1] if history else None)


def _metrics_line(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "no evaluation yet"
    keys = [k for k in ("code_acc", "unit_test_acc", "p01", "p00") if isinstance(entry.get(k), (int, float))]
    keys += sorted(k for k in entry if k.startswith("bon_") and isinstance(entry[k], (int, float)))
    return f"round {entry['round']}: " + ", ".join(f"{k}={entry[k]:.3f}" for k in keys)


def configure_parser(p: argparse.ArgumentParser) -> None:
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


def run_cli(args: argparse.Namespace, cfg: Any) -> int:
    try:
        return _submit(args, cfg)
    except SubmitError as e:
        print(f"error: {e}")
        return 1


def _submit(args: argparse.Namespace, cfg: Any) -> int:
    import kfp

    declared = package_parameters(args.package)
    params = typed_params(args.param, declared)
    cron = kfp_cron(args.recurring) if args.recurring else None
    client = kfp.Client(host=args.host, namespace=args.namespace)
    experiment = client.create_experiment(args.experiment_name, namespace=args.namespace)
    if cron:
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=args.run_name or "cure-recurring", cron_expression=cron,
            max_concurrency=1, pipeline_package_path=args.package, params=params, no_catchup=True,
        )
        print(f"recurring run {job.recurring_run_id} created (KFP cron '{cron}', max concurrency 1, no catch-up)")
        return 0

    def default(name: str) -> Any:
        return params.get(name, declared.get(name, {}).get("defaultValue"))

    store_uri, exp_name = default("pipeline__store_uri"), default("pipeline__experiment")
    total = default("total_rounds")
    runs, prev_done = 0, None
    if args.until_done:
        try:
            prev_done = experiment_state(store_uri, exp_name)[0]
        except Exception as e:
            raise SubmitError(f"--until-done needs the experiment's state, but {store_uri} could not be read from here "
                              f"({e}); set the store's credentials (CURE_S3_*)") from e
        if total is not None and prev_done >= int(total):
            print(f"experiment {exp_name} is already at round {prev_done} of {total}: nothing to do")
            return 0
    while True:
        name = args.run_name or f"cure-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        if runs:
            name += f"-{runs + 1}"
        run = client.run_pipeline(experiment_id=experiment.experiment_id, job_name=name,
                                  pipeline_package_path=args.package, params=params)
        runs += 1
        print(f"run {run.run_id} submitted: {run_url(args.host, run.run_id)}")
        if not (args.wait or args.until_done):
            return 0
        state = wait_for_run(client, run.run_id, args.timeout, args.poll)
        entry, done = None, None
        if store_uri and exp_name:
            try:
                done, entry = experiment_state(store_uri, exp_name)
            except Exception as e:  # the store may not be reachable from where this runs
                print(f"(experiment state not read from {store_uri}: {e})")
        print(f"run {run.run_id} {state}: {run_url(args.host, run.run_id)}")
        print(f"experiment {exp_name}: latest round {done if done is not None else '?'} of {total}; {_metrics_line(entry)}")
        if state not in FINAL_OK:
            return 1
        if not args.until_done:
            return 0
        if done is None:
            raise SubmitError(f"--until-done needs the experiment's state: set the store's credentials (CURE_S3_*) "
                              f"so that {store_uri} can be read from here")
        if total is None or done >= int(total):
            print(f"experiment {exp_name} reached {total} rounds after {runs} run(s)")
            return 0
        if prev_done is not None and done <= prev_done:
            raise SubmitError(f"run {run.run_id} succeeded but the experiment did not advance past round {done}")
        prev_done = done
