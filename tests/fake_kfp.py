"""A fake Kubeflow Pipelines API server (v2beta1 REST, as ``kfp.Client`` speaks it) on loopback.

It keeps experiments, runs and recurring runs, and refuses a created run or recurring run the way KFP 2.17's API
server does, each rule restating the upstream source (kubeflow/pipelines at tag 2.17.0):

- parameters: ``backend/src/apiserver/template/v2_template.go`` ``validatePipelineJobInputs`` — a value of the
  declared type (NUMBER_INTEGER/NUMBER_DOUBLE: a JSON number, STRING a string, BOOLEAN a bool, LIST a list, STRUCT
  an object), no parameter the pipeline does not declare, every parameter without a default given;
- the workspace: ``backend/src/v2/compiler/argocompiler/argo.go`` (the run's Argo workflow is compiled at
  creation): ``workspace PVC spec must specify accessModes``; a storageClassName omitted or non-empty; a size that
  parses as a Kubernetes quantity and is not negative;
- recurring runs: ``backend/src/apiserver/server/api_converter.go`` — max concurrency from 1 to 10; a cron that
  ``github.com/robfig/cron`` v1.2.0's ``cron.Parse`` accepts (the go.mod pin; the scheduledworkflow controller,
  ``backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go``, parses with the same function):
  5 or 6 fields, seconds first, day of week optional, or a descriptor (``@daily``, ``@every 1h``); a periodic
  interval of at least 1 second.

Errors are HTTP 400 with gRPC-gateway's body (``code`` 3 InvalidArgument, ``message``), as the real server
answers, so ``kfp.Client`` raises its ``ApiException``. With ``token`` set, a request without that bearer token is
answered 401 (a multi-user install behind its auth proxy). ``flaky_gets`` answers that many run reads with 503
first (a restarting API server).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import LoopbackServer

QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?")

# robfig/cron v1.2.0 spec.go: the bounds of each field and the names parser.go accepts (case-insensitive).
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
CRON_BOUNDS = [("seconds", 0, 59, {}), ("minutes", 0, 59, {}), ("hours", 0, 23, {}), ("dom", 1, 31, {}),
               ("months", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}), ("dow", 0, 6, {d: i for i, d in enumerate(_DAYS)})]
DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def robfig_parse(spec: str) -> None:
    """Raise ValueError where robfig/cron v1.2.0 ``cron.Parse`` (parser.go: Second | Minute | Hour | Dom | Month |
    DowOptional | Descriptor) returns an error; the message is robfig's."""
    if not spec:
        raise ValueError("Empty spec string")
    if spec.startswith("@"):
        if spec in DESCRIPTORS:
            return
        if spec.startswith("@every "):
            if not re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", spec[len("@every "):]):
                raise ValueError(f"Failed to parse duration {spec}")
            return
        raise ValueError(f"Unrecognized descriptor: {spec}")
    fields = spec.split()
    if not 5 <= len(fields) <= 6:
        raise ValueError(f"Expected 5 to 6 fields, found {len(fields)}: {spec}")
    for text, (_, lo, hi, names) in zip(fields, CRON_BOUNDS):
        for expr in [e for e in text.split(",") if e]:  # strings.FieldsFunc drops empty parts
            range_and_step = expr.split("/")
            low_high = range_and_step[0].split("-")
            if low_high[0] in ("*", "?"):
                start, end = lo, hi
            else:
                start = _int_or_name(low_high[0], names)
                if len(low_high) > 2:
                    raise ValueError(f"Too many hyphens: {expr}")
                end = _int_or_name(low_high[1], names) if len(low_high) == 2 else start
            if len(range_and_step) > 2:
                raise ValueError(f"Too many slashes: {expr}")
            step = _int_or_name(range_and_step[1], {}) if len(range_and_step) == 2 else 1
            if len(range_and_step) == 2 and len(low_high) == 1:
                end = hi
            if start < lo:
                raise ValueError(f"Beginning of range ({start}) below minimum ({lo}): {expr}")
            if end > hi:
                raise ValueError(f"End of range ({end}) above maximum ({hi}): {expr}")
            if start > end:
                raise ValueError(f"Beginning of range ({start}) beyond end of range ({end}): {expr}")
            if step == 0:
                raise ValueError(f"Step of range should be a positive number: {expr}")


def _int_or_name(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[+-]?\d+", text):  # strconv.Atoi
        raise ValueError(f"Failed to parse int from {text}")
    if int(text) < 0:
        raise ValueError(f"Negative number ({int(text)}) not allowed: {text}")
    return int(text)


_KINDS = {"NUMBER_INTEGER": ((int, float), "double or integer", "number"),
          "NUMBER_DOUBLE": ((int, float), "double or integer", "number"),
          "STRING": ((str,), "string", "string"), "BOOLEAN": ((bool,), "bool", "bool"),
          "LIST": ((list,), "list", "list"), "STRUCT": ((dict,), "struct", "struct")}


def validate_inputs(spec: dict[str, Any], values: dict[str, Any]) -> None:
    """v2_template.go validatePipelineJobInputs."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    for name, param in declared.items():
        if name not in values:
            if not param.get("isOptional") and "defaultValue" not in param:
                raise ValueError(f"parameter {name} is not optional, yet has neither default value nor user provided value")
            continue
        types, want, kind = _KINDS[param["parameterType"]]
        value = values[name]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ValueError(f"input parameter {name} requires type {want}, but the input parameter is not of {kind} value type")
    extra = [n for n in values if n not in declared]
    if extra:
        raise ValueError(f"parameter(s) provided are not required by pipeline: {', '.join(extra)}")


def validate_workspace(platform: dict[str, Any]) -> None:
    """argo.go: the workspace PVC the run's workflow would create (no cluster default configured)."""
    workspace = platform.get("kubernetes", {}).get("pipelineConfig", {}).get("workspace")
    if not workspace:
        return
    size = workspace.get("size", "")
    if not size:
        raise ValueError("workspace size is required but not specified")
    patch = workspace.get("kubernetes", {}).get("pvcSpecPatch") or {}
    if not patch.get("accessModes"):
        raise ValueError("workspace PVC spec must specify accessModes")
    if patch.get("storageClassName", None) == "":
        raise ValueError("workspace PVC spec storageClassName must be omitted or set to a non-empty value")
    if not QUANTITY.fullmatch(size):
        raise ValueError(f"invalid size value for workspace PVC: quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({size})")
    if size.startswith("-"):
        raise ValueError(f"negative size value for workspace PVC: {size}")


def _spec_and_platform(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """kfp.Client sends the pipeline spec, or {pipeline_spec, platform_spec} when it has a platform spec."""
    spec = body.get("pipeline_spec") or {}
    if "pipeline_spec" in spec:
        return spec["pipeline_spec"], spec.get("platform_spec", {}).get("platforms", {})
    return spec, {}


class FakeKFP(LoopbackServer):
    """Experiments, runs whose states follow a script per run, recurring runs; every accepted body is kept, every
    refusal in ``refused``."""

    def __init__(self, run_states: list[list[str]], on_finish: Callable[[int], None] | None = None,
                 token: str | None = None, flaky_gets: int = 0) -> None:
        self.run_states = run_states  # the states get_run reports, per submitted run, the last one repeating
        self.on_finish = on_finish  # called with the run index when a run reaches its last state
        self.token, self.flaky_gets = token, flaky_gets
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring: list[dict] = []
        self.refused: list[str] = []
        self.polls: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, grpc: int, message: str) -> None:
                fake.refused.append(message)
                self._send(code, {"error": message, "code": grpc, "message": message, "details": []})

            def _authorized(self) -> bool:
                if fake.token is None or self.headers.get("Authorization") == f"Bearer {fake.token}":
                    return True
                self._error(401, 16, "Unauthenticated: request is missing a valid bearer token")
                return False

            def _body(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if path == "/apis/v2beta1/healthz":
                    return self._send(200, {"multi_user": False})
                if not self._authorized():
                    return None
                if path == "/apis/v2beta1/experiments":
                    return self._send(200, {"experiments": fake.experiments} if fake.experiments else {})
                if path.startswith("/apis/v2beta1/runs/"):
                    if fake.flaky_gets > 0:
                        fake.flaky_gets -= 1
                        return self._error(503, 14, "upstream connect error or disconnect/reset before headers")
                    run_id = path.rsplit("/", 1)[1]
                    i = int(run_id.split("-")[1])
                    states = fake.run_states[min(i, len(fake.run_states) - 1)]
                    n = fake.polls.get(run_id, 0)
                    fake.polls[run_id] = n + 1
                    state = states[min(n, len(states) - 1)]
                    if n == len(states) - 1 and fake.on_finish:
                        fake.on_finish(i)
                    return self._send(200, {"run_id": run_id, "display_name": fake.runs[i]["display_name"], "state": state})
                return self._send(404, {"error": f"no route {path}", "code": 5, "message": f"no route {path}"})

            def do_POST(self) -> None:  # noqa: N802
                path, body = self.path.split("?")[0], self._body()
                if not self._authorized():
                    return None
                if path == "/apis/v2beta1/experiments":
                    exp = {**body, "experiment_id": f"exp-{len(fake.experiments)}"}
                    fake.experiments.append(exp)
                    return self._send(200, exp)
                if path in ("/apis/v2beta1/runs", "/apis/v2beta1/recurringruns"):
                    try:
                        fake.validate(body, recurring=path.endswith("recurringruns"))
                    except ValueError as e:
                        return self._error(400, 3, f"Invalid input error: {e}")
                    if path.endswith("/runs"):
                        run = {**body, "run_id": f"run-{len(fake.runs)}", "state": "PENDING"}
                        fake.runs.append(run)
                        return self._send(200, run)
                    job = {**body, "recurring_run_id": f"rr-{len(fake.recurring)}"}
                    fake.recurring.append(job)
                    return self._send(200, job)
                return self._send(404, {"error": f"no route {path}", "code": 5, "message": f"no route {path}"})

        self._serve(Handler)

    def validate(self, body: dict[str, Any], recurring: bool) -> None:
        spec, platform = _spec_and_platform(body)
        validate_inputs(spec, (body.get("runtime_config") or {}).get("parameters") or {})
        validate_workspace(platform)
        if recurring:
            concurrency = int(body.get("max_concurrency") or 0)
            if not 1 <= concurrency <= 10:
                raise ValueError(f"Max concurrency of a recurring run must be at least 1 and at most 10. Received {concurrency}")
            trigger = body.get("trigger") or {}
            cron = (trigger.get("cron_schedule") or {}).get("cron")
            if cron is not None:
                try:
                    robfig_parse(cron)
                except ValueError as e:
                    raise ValueError(f"Schedule cron is not a supported format(https://godoc.org/github.com/robfig/cron). "
                                     f"Error: {e}") from None
            interval = (trigger.get("periodic_schedule") or {}).get("interval_second")
            if interval is not None and int(interval) < 1:
                raise ValueError(f"Found invalid period schedule interval {interval}. Set at interval to least 1 second")
