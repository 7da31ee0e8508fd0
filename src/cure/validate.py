"""Artifact contracts, checked where a stage reads them: bad input is rejected with one line, never used silently.

Every JSON Lines artifact goes through :func:`read_records`: each line must be UTF-8 and one JSON object. The
records it returns remember their file and line, so the contract checks below name ``FILE:LINE: field 'x':
problem`` (records built in memory are named ``record N``). The contracts are those of docs/architecture.md,
"Artifact contracts" (task, rollout, execution, reward records):

* rollouts (:func:`check_rollouts`): unique non-empty ``task_id``; ``codes`` a list of str/null; ``gt_tests`` a
  list of ``{"input": str, "output": str}``; ``tests`` a list (entries may be null: a test that could not be
  extracted); ``time_limit_s`` a number of seconds in (0, 3600]; for the reward stage also the prompts, the
  responses (one per program / test) and non-negative integer lengths;
* executions (:func:`check_executions`): unique ``task_id``; ``num_gt`` an integer in [0, columns];
  ``passed`` a rectangular list of lists of JSON booleans (``"no"`` or ``0`` is not a boolean); ``status`` the
  same shape with known statuses, and ``passed == (status == "pass")``;
* the join (:func:`check_join`): every rollout has exactly one execution and every execution a rollout, with
  ``rows == len(codes)``, ``num_gt == len(gt_tests)`` and ``columns == len(gt_tests) + len(tests)``;
* reward records: :func:`cure.train.data.validate_record`, plus the range check :func:`check_reward_range`.

A problem raises :class:`ArtifactError` (a :class:`CliError`): the ``cure`` command prints its one line and
exits with code 2 (``-v`` adds the traceback).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STATUSES = ("pass", "fail", "error", "timeout", "memory", "output_limit", "no_code", "no_test")
MAX_TIME_LIMIT_S = 3600.0


class CliError(Exception):
    """An error the user can fix (bad input, a missing file, a bad option): one line on stderr, exit code 2."""

    exit_code = 2


class ArtifactError(CliError, ValueError):
    """An artifact breaks its contract; the message names the file, the line and the field."""


class Records(list):
    """A list of records that remembers where each came from (file and line), for messages."""

    def __init__(self, items: Iterable[Any] = (), path: str | Path | None = None, lines: Sequence[int] | None = None):
        super().__init__(items)
        self.path = None if path is None else str(path)
        self.lines = list(lines) if lines is not None else None

    def where(self, i: int) -> str:
        if self.path is not None and self.lines is not None and i < len(self.lines):
            return f"{self.path}:{self.lines[i]}"
        return f"{self.path} record {i}" if self.path else f"record {i}"


def where_of(records: Sequence[Any], i: int, what: str = "record") -> str:
    if isinstance(records, Records):
        return records.where(i)
    return f"{what} {i}"


def read_records(path: str | Path, what: str = "artifact") -> Records:
    """Read a JSON Lines file: every non-blank line one UTF-8 JSON object. Raises :class:`ArtifactError`."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    items: list[Any] = []
    lines: list[int] = []
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ArtifactError(f"{p}:{lineno}: not valid UTF-8 (byte {e.start} of the line); the {what} must be UTF-8 JSON Lines") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{p}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ArtifactError(
                    f"{p}:{lineno}: expected one JSON object per line (JSON Lines), got a {_type(obj)}"
                )
            items.append(obj)
            lines.append(lineno)
    return Records(items, p, lines)


def _type(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _err(where: str, field: str, problem: str) -> ArtifactError:
    return ArtifactError(f"{where}: field {field!r}: {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_list(rec: dict, key: str, where: str, *, nullable: bool = False) -> list:
    v = rec.get(key)
    if not isinstance(v, list):
        raise _err(where, key, f"must be a list of strings{' or null' if nullable else ''}, got {_type(v)}")
    for j, x in enumerate(v):
        if not (isinstance(x, str) or (nullable and x is None)):
            raise _err(where, f"{key}[{j}]", f"must be a string{' or null' if nullable else ''}, got {_type(x)}")
    return v


def _test_list(rec: dict, key: str, where: str, *, nullable: bool) -> list:
    v = rec.get(key)
    if not isinstance(v, list):
        raise _err(where, key, f"must be a list of {{'input': str, 'output': str}}, got {_type(v)}")
    for j, t in enumerate(v):
        if t is None and nullable:
            continue
        if not (isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)):
            if nullable:  # a generated test that could not be used is a column of ``no_test``, not an error
                continue
            raise _err(where, f"{key}[{j}]", f"must be {{'input': str, 'output': str}}, got {t!r:.80}")
    return v


def _unique_ids(records: Sequence[Any], what: str) -> None:
    """Every record is a JSON object with a non-empty ``task_id`` that no other record has."""
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ArtifactError(f"{where_of(records, i, f'{what} record')}: expected a JSON object, got {_type(rec)}")
    seen: dict[str, str] = {}
    for i, rec in enumerate(records):
        where = where_of(records, i, f"{what} record")
        tid = rec.get("task_id")
        if not isinstance(tid, str) or not tid:
            raise _err(where, "task_id", f"must be a non-empty string, got {tid!r:.80}")
        if tid in seen:
            raise _err(where, "task_id", f"duplicate {tid!r} (first at {seen[tid]}); every task appears once")
        seen[tid] = where


def check_rollouts(records: Sequence[Any], *, for_reward: bool = False) -> None:
    """The rollout contract (see the module docstring). ``for_reward`` also requires prompts and responses."""
    _unique_ids(records, "rollout")
    for i, rec in enumerate(records):
        where = where_of(records, i, "rollout record")
        codes = _str_list(rec, "codes", where, nullable=True)
        _test_list(rec, "gt_tests", where, nullable=False)
        if "tests" in rec:
            _test_list(rec, "tests", where, nullable=True)
        limit = rec.get("time_limit_s")
        if limit is not None and (not _is_num(limit) or not 0 < limit <= MAX_TIME_LIMIT_S):
            raise _err(where, "time_limit_s", f"must be seconds in (0, {MAX_TIME_LIMIT_S:g}], got {limit!r}")
        if not for_reward:
            continue
        for key in ("code_prompt", "test_prompt"):
            if not isinstance(rec.get(key), str):
                raise _err(where, key, f"must be a string, got {_type(rec.get(key))}")
        code_resp = _str_list(rec, "code_responses", where)
        test_resp = _str_list(rec, "test_responses", where)
        if len(code_resp) != len(codes):
            raise _err(where, "code_responses", f"has {len(code_resp)} entries but 'codes' has {len(codes)}")
        tests = rec.get("tests", [])
        if len(test_resp) != len(tests):
            raise _err(where, "test_responses", f"has {len(test_resp)} entries but 'tests' has {len(tests)}")
        for key, n in (("code_lengths", len(code_resp)), ("test_lengths", len(test_resp)),
                       ("code_truncated", len(code_resp)), ("test_truncated", len(test_resp))):
            v = rec.get(key)
            if v is None:
                continue
            ok = _is_int if key.endswith("lengths") else (lambda x: isinstance(x, bool))
            if not isinstance(v, list) or len(v) != n or not all(ok(x) and (not _is_int(x) or x >= 0) for x in v):
                kind = "non-negative integers" if key.endswith("lengths") else "booleans"
                raise _err(where, key, f"must be a list of {n} {kind} (one per response), got {v!r:.80}")


def check_executions(records: Sequence[Any]) -> None:
    """The execution contract: unique ids, a rectangular boolean ``passed``, ``status`` of the same shape."""
    _unique_ids(records, "execution")
    for i, rec in enumerate(records):
        where = where_of(records, i, "execution record")
        passed = rec.get("passed")
        if not isinstance(passed, list):
            raise _err(where, "passed", f"must be a list of rows (lists of booleans), got {_type(passed)}")
        width = None
        for r, row in enumerate(passed):
            if not isinstance(row, list):
                raise _err(where, f"passed[{r}]", f"must be a list of booleans, got {_type(row)}")
            for c, cell in enumerate(row):
                if not isinstance(cell, bool):
                    raise _err(where, f"passed[{r}][{c}]", f"must be true or false, got {cell!r:.40}")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise _err(where, f"passed[{r}]", f"has {len(row)} columns but row 0 has {width}; the table must be rectangular")
        width = width or 0
        num_gt = rec.get("num_gt")
        if not _is_int(num_gt) or not 0 <= num_gt <= width:
            raise _err(where, "num_gt", f"must be an integer in [0, {width}] (the table's columns), got {num_gt!r}")
        status = rec.get("status")
        if status is None:
            continue
        if not isinstance(status, list) or len(status) != len(passed):
            raise _err(where, "status", f"must have the shape of 'passed' ({len(passed)} rows), got {_type(status)}")
        for r, (srow, prow) in enumerate(zip(status, passed)):
            if not isinstance(srow, list) or len(srow) != len(prow):
                raise _err(where, f"status[{r}]", f"must have {len(prow)} entries like passed[{r}]")
            for c, (s, p) in enumerate(zip(srow, prow)):
                if s not in STATUSES:
                    raise _err(where, f"status[{r}][{c}]", f"unknown status {s!r:.40}; one of {', '.join(STATUSES)}")
                if (s == "pass") != p:
                    raise _err(where, f"passed[{r}][{c}]", f"is {str(p).lower()} but status is {s!r}")


def check_join(rollouts: Sequence[dict], executions: Sequence[dict]) -> None:
    """Every rollout has its execution and every execution its rollout, with matching table shapes."""
    by_id = {e["task_id"]: (i, e) for i, e in enumerate(executions)}
    rollout_ids = set()
    for i, r in enumerate(rollouts):
        where = where_of(rollouts, i, "rollout record")
        tid = r["task_id"]
        rollout_ids.add(tid)
        if tid not in by_id:
            src = executions.path if isinstance(executions, Records) and executions.path else "the executions"
            raise _err(where, "task_id", f"{tid!r} has no execution record in {src}; run `cure execute` on these rollouts")
        j, e = by_id[tid]
        ewhere = where_of(executions, j, "execution record")
        rows, gt = len(e["passed"]), len(r["gt_tests"])
        width = len(e["passed"][0]) if e["passed"] else None
        if rows != len(r["codes"]):
            raise _err(ewhere, "passed", f"has {rows} rows but the rollout ({where}) has {len(r['codes'])} codes")
        if e["num_gt"] != gt:
            raise _err(ewhere, "num_gt", f"is {e['num_gt']} but the rollout ({where}) has {gt} gt_tests")
        cols = gt + len(r.get("tests", []))
        if width is not None and width != cols:
            raise _err(ewhere, "passed", f"has {width} columns but the rollout ({where}) has {gt} gt_tests + "
                       f"{cols - gt} tests")
    for j, e in enumerate(executions):
        if e["task_id"] not in rollout_ids:
            raise _err(where_of(executions, j, "execution record"), "task_id",
                       f"{e['task_id']!r} has no rollout record; the executions belong to other rollouts")


def check_reward_range(records: Sequence[dict], max_abs: float, mode: str) -> int:
    """Rewards are z-scores: reject (``mode="reject"``) or clip to ``±max_abs`` (``"clip"``, counted) larger ones.

    Returns how many rewards were clipped. Non-finite rewards are always rejected.
    """
    clipped = 0
    for i, rec in enumerate(records):
        r = rec.get("reward")
        if not _is_num(r) or not math.isfinite(r):
            raise _err(where_of(records, i, "training record"), "reward", f"must be a finite number, got {r!r}")
        if abs(r) > max_abs:
            if mode != "clip":
                raise _err(
                    where_of(records, i, "training record"), "reward",
                    f"{r!r} is outside [-{max_abs:g}, {max_abs:g}] (rewards are per-task z-scores); fix the reward "
                    "stage, or set train.reward_out_of_range=clip to clip such rewards (counted)",
                )
            rec["reward"] = math.copysign(max_abs, r)
            clipped += 1
    return clipped


def check_output_path(path: str | Path, flag: str = "--out", *, folder: bool = False, create: bool = True) -> Path:
    """Fail before the work starts if ``path`` cannot be written (a file, or a folder when ``folder``).

    Creates the missing parent folders when ``create`` (as the writers do), then writes and removes a probe
    file where the output will go. Raises :class:`CliError` naming the flag and the path.
    """
    import tempfile

    p = Path(path)
    target_dir = p if folder else p.parent
    if not folder and p.is_dir():
        raise CliError(f"{flag} {p}: is a folder; give a file name")
    if folder and p.exists() and not p.is_dir():
        raise CliError(f"{flag} {p}: is a file; give a folder")
    if not target_dir.exists():
        if not create:
            raise CliError(f"{flag} {p}: folder {target_dir} does not exist; create it first")
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"{flag} {p}: cannot create folder {target_dir}: {e.strerror or e}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".cure-write-probe-", dir=target_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CliError(f"{flag} {p}: cannot write in {target_dir}: {e.strerror or e}") from None
    return p


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, briefly, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022
