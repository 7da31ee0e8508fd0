"""``cure submit``: runs and recurring runs on a KFP endpoint that mean what they say.

- Parameters are converted to the types the compiled pipeline declares (``resume=true`` becomes a boolean, an
  integer stays an integer, a string is never re-parsed), and an unknown name is an error.
- ``--wait`` polls the run until it ends and exits non-zero unless it SUCCEEDED (FAILED, CANCELED, a timeout);
  it prints the run's URL and the experiment's latest evaluation from the store when the store is reachable.
- ``--until-done`` chains runs of the training pipeline until the experiment reaches ``total_rounds``.
- ``--recurring`` takes a standard 5-field cron (``m h dom mon dow``) or KFP's 6-field one (seconds first),
  validates it with the grammar KFP's API server parses it with (robfig/cron v1.2.0 ``cron.Parse``, the pin in
  kubeflow/pipelines' go.mod at 2.17.0), refuses a schedule that can never fire (``0 2 31 2 *``, which that
  parser accepts), and submits KFP's form.
- Authentication: ``--token`` or ``KF_PIPELINES_TOKEN`` (a multi-user Kubeflow behind its auth proxy).
- Network: every request has a connect and read timeout (``--api-timeout``); transient errors (connection
  refused or reset, timeouts, HTTP 429/5xx) are retried with backoff while polling a run, which goes on meanwhile;
  a create is retried only when the request never reached the server.
- Errors: bad input (a parameter the pipeline lacks or of the wrong type, a bad cron, a missing package, a run the
  API server refuses as invalid) exits 2, anything else 1; both with one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

FINAL_OK = {"SUCCEEDED"}
FINAL_BAD = {"FAILED", "CANCELED", "CANCELLED", "SKIPPED", "ERROR"}


class SubmitError(RuntimeError):
    """A submission or a run went wrong; the message says which run and what to do."""


class SubmitInputError(SubmitError, ValueError):
    """The command's input is wrong (parameters, cron, package, a run the API server refused): exit code 2."""


# --- parameters ---------------------------------------------------------------------------------------------


def package_parameters(package: str | Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's parameters: name -> {"parameterType": ..., "defaultValue": ...}."""
    path = Path(package)
    if not path.is_file():
        raise SubmitInputError(f"--package {path} does not exist: run `cure compile --out {path.parent}` first")
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
        raise SubmitInputError(f"--param {name}={text!r}: not a valid {kind}: {e}") from None
    return text


def typed_params(items: list[str], declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``NAME=VALUE`` items converted to the declared types."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SubmitInputError(f"--param {item!r}: expected NAME=VALUE")
        if declared and name not in declared:
            close = [n for n in declared if name.split("__")[-1] in n][:5]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SubmitInputError(f"--param {name}: the pipeline has no such parameter{hint}")
        out[name] = typed_value(name, text, declared.get(name, {}).get("parameterType", "STRING")) if declared else text
    return out


# --- cron ---------------------------------------------------------------------------------------------------

# robfig/cron v1.2.0 (spec.go): the bounds of each field, seconds first, and the names parser.go accepts.
_CRON_FIELDS = [("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 6)]
_NAMES = {4: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
          5: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]}
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def kfp_cron(expr: str) -> str:
    """A 5-field cron (``m h dom mon dow``) or KFP's 6-field one (``s m h dom mon dow``) -> KFP's 6-field form.

    KFP (robfig/cron ``cron.Parse``) reads six fields with seconds first, so ``0 2 * * *`` given as is would mean
    "second 0 of minute 2 of every hour"; here it becomes ``0 0 2 * * *`` (02:00 every day). Each field follows
    robfig's parser.go ``getRange``: ``*`` or ``?``, ``N``, ``N-M`` (N <= M), any of them ``/STEP`` (STEP >= 1), comma
    lists, names for months and days; then the schedule must be able to fire (robfig accepts ``0 2 31 2 *``, which
    never does).
    """
    if expr.strip() in DESCRIPTORS or re.fullmatch(r"@every (\d+(\.\d+)?(ns|us|ms|s|m|h))+", expr.strip()):
        return expr.strip()  # robfig's descriptors (parser.go parseDescriptor)
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise SubmitInputError(f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week) or "
                               "KFP's 6 (second first); e.g. '0 2 * * *' for 02:00 every day")
    sets = [_cron_field(expr, i, field) for i, field in enumerate(fields)]
    days, months = sets[3], sets[4]
    if not any(d <= _DAYS_IN_MONTH[m - 1] for m in months for d in days):
        raise SubmitInputError(f"cron {expr!r}: no month of {sorted(months)} has day {min(days)}: it never runs")
    return " ".join(fields)


def _cron_field(expr: str, i: int, field: str) -> set[int]:
    what, lo, hi = _CRON_FIELDS[i]

    def bad(problem: str) -> SubmitInputError:
        return SubmitInputError(f"cron {expr!r}: {what} {field!r}: {problem}")

    values: set[int] = set()
    for part in [p for p in field.split(",") if p]:
        base, slash, step_text = part.partition("/")
        if "/" in step_text:
            raise bad("more than one /")
        if base in ("*", "?"):
            start, end = lo, hi
        else:
            bounds = base.split("-")
            if len(bounds) > 2:
                raise bad("more than one -")
            start = _cron_value(i, bounds[0])
            end = _cron_value(i, bounds[1]) if len(bounds) == 2 else (hi if slash else start)
            if start is None or end is None:
                raise bad("not a number" + (" or a name" if i in _NAMES else ""))
            if start < lo or end > hi:
                raise bad(f"not in {lo}-{hi}")
            if start > end:
                raise bad(f"range {start}-{end} runs backwards")
        step = int(step_text) if slash and step_text.isdigit() else (1 if not slash else None)
        if not step:
            raise bad("the step after / must be a number >= 1")
        values.update(range(start, end + 1, step))
    if not values:
        raise bad("empty")
    return values


def _cron_value(i: int, text: str) -> int | None:
    names = _NAMES.get(i, [])
    if text.upper() in names:
        return names.index(text.upper()) + (1 if i == 4 else 0)
    return int(text) if text.isdigit() else None


# --- runs ---------------------------------------------------------------------------------------------------


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


TRANSIENT_STATUS = {429, 500, 502, 503, 504}
BACKOFF_S = 2.0  # seconds before the first retry of a request; the n-th waits n times as long


def _transient(e: BaseException) -> bool:
    """A connection refused/reset, a timeout, or an HTTP status worth retrying."""
    import urllib3

    status = getattr(e, "status", None)
    return isinstance(e, (urllib3.exceptions.HTTPError, OSError)) or status in TRANSIENT_STATUS


def _reached_server(e: BaseException) -> bool:
    """Whether the failed request may have been received (a create then must not be sent again)."""
    import urllib3

    reason = getattr(e, "reason", None)
    return not isinstance(e, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                              ConnectionRefusedError)) and not isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def describe(e: BaseException) -> str:
    """One line for an API error: the server's message, or the network's reason without urllib3's wrapping."""
    body = getattr(e, "body", None)
    if body:
        try:
            import json

            return str(json.loads(body).get("message") or body).strip()
        except ValueError:
            return str(body).strip()[:300]
    reason = getattr(e, "reason", None)
    text = str(reason if reason is not None else e)
    text = re.sub(r"<urllib3[^>]*>: ", "", text)
    return (text.split("Caused by ")[-1] if "Caused by" in text else text).strip()[:300] or type(e).__name__


def api_call(what: str, fn: Callable[[], Any], host: str, *, attempts: int = 5, idempotent: bool = True) -> Any:
    """``fn()`` with retries on transient errors; raises :class:`SubmitError` (or, for a request the server
    refused as invalid, :class:`SubmitInputError`) with one line naming ``what`` and the host."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # urllib3 / kfp_server_api errors; anything else is a bug and propagates
            import urllib3

            status = getattr(e, "status", None)
            if status is None and not isinstance(e, (urllib3.exceptions.HTTPError, OSError)):
                raise
            if status in (401, 403):
                raise SubmitError(f"{what}: {host} refused the credentials (HTTP {status}: {describe(e)}); pass "
                                  "--token or set KF_PIPELINES_TOKEN") from None
            if status == 400:
                raise SubmitInputError(f"{what}: {host} refused it: {describe(e)}") from None
            retry = _transient(e) and attempt < attempts and (idempotent or not _reached_server(e))
            if not retry:
                raise SubmitError(f"{what}: {host}: {describe(e)}" + ("" if idempotent else
                                  " (the request may have reached the server: check the KFP UI before retrying)")) from None
            time.sleep(BACKOFF_S * attempt)
    raise AssertionError("unreachable")


def wait_for_run(client: Any, run_id: str, timeout_s: float, poll_s: float = 15.0, host: str = "",
                 attempts: int = 5) -> str:
    """The run's final state (SUCCEEDED, FAILED, CANCELED, ...); raises :class:`SubmitError` on a timeout or
    when the API stays unreachable (the run goes on in the cluster: the message says where to look)."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    while True:
        try:
            run = api_call(f"reading run {run_id}", lambda: client.get_run(run_id), host, attempts=attempts)
        except SubmitError as e:
            raise SubmitError(f"{e}; the run goes on: {run_url(host, run_id)}") from None
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


@contextlib.contextmanager
def request_timeout(seconds: float) -> Iterator[None]:
    """Every KFP API request inside the block gets connect and read timeouts of ``seconds``.

    ``kfp.Client`` passes no timeout, and kfp_server_api then hands urllib3 ``timeout=None`` (wait forever), so
    the default is set where the requests go out (``RESTClientObject.request``), the client's own health check
    included."""
    from kfp_server_api import rest

    original = rest.RESTClientObject.request

    def with_timeout(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("_request_timeout"):
            kwargs["_request_timeout"] = (seconds, seconds)
        return original(self, *args, **kwargs)

    rest.RESTClientObject.request = with_timeout  # type: ignore[method-assign]
    try:
        yield
    finally:
        rest.RESTClientObject.request = original  # type: ignore[method-assign]


def submit(args: argparse.Namespace, cfg: Any) -> int:
    try:
        if not args.api_timeout > 0 or args.api_attempts < 1:
            raise SubmitInputError(f"--api-timeout must be > 0 and --api-attempts >= 1 (got {args.api_timeout}, "
                                   f"{args.api_attempts})")
        with request_timeout(args.api_timeout):
            return _submit(args, cfg)
    except SubmitError as e:
        print(f"cure submit: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, SubmitInputError) else 1


def _submit(args: argparse.Namespace, cfg: Any) -> int:
    import kfp

    declared = package_parameters(args.package)
    params = typed_params(args.param, declared)
    cron = kfp_cron(args.recurring) if args.recurring else None
    host = args.host
    token = args.token or os.environ.get("KF_PIPELINES_TOKEN") or None
    tries = args.api_attempts
    client = api_call("connecting", lambda: kfp.Client(host=host, namespace=args.namespace, existing_token=token),
                      host, attempts=tries)
    experiment = api_call(f"experiment {args.experiment_name}",
                          lambda: client.create_experiment(args.experiment_name, namespace=args.namespace), host,
                          attempts=tries)
    if cron:
        job = api_call("creating the recurring run", lambda: client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=args.run_name or "cure-recurring", cron_expression=cron,
            max_concurrency=1, pipeline_package_path=args.package, params=params, no_catchup=True,
        ), host, attempts=tries, idempotent=False)
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
        run = api_call(f"creating run {name}", lambda n=name: client.run_pipeline(
            experiment_id=experiment.experiment_id, job_name=n, pipeline_package_path=args.package, params=params),
            host, attempts=tries, idempotent=False)
        runs += 1
        print(f"run {run.run_id} submitted: {run_url(args.host, run.run_id)}")
        if not (args.wait or args.until_done):
            return 0
        state = wait_for_run(client, run.run_id, args.timeout, args.poll, host, tries)
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
