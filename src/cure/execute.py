"""Execute stage: rollouts -> pass tables, every program against every test, in the sandbox.

For each task the table has one row per sampled program (``codes``) and one column per test: the ground-truth
tests (``gt_tests``) first, then the generated tests (``tests``), as in CURE (``num_gt`` says where the split is).
Each cell has a ``status``:

=============== =====================================================================================
``pass``        the program ran to the end (or called ``sys.exit``) and its output matches
``fail``        it ran to the end but the output differs
``error``       it raised (its output is lost, as in CURE), did not compile, or crashed
``timeout``     it used more CPU time than the task's ``time_limit_s`` (or slept past the wall-clock limit)
``memory``      it ran out of its address-space limit
``output_limit`` it printed more than the output cap
``no_code``     no program could be extracted from the response (the whole row)
``no_test``     no test could be extracted / the test is malformed (the whole column)
=============== =====================================================================================

``passed`` is ``status == "pass"``. **Output comparison** is CURE's (reference ``optimization/execute.py``,
``test_if_eq``): whitespace-normalised exact match, ``" ".join(out.split()) == " ".join(expected.split())``; so
line breaks, runs of spaces and trailing newlines do not matter, everything else (case, ``1.0`` vs ``1``) does.
A program's input arrives through a patched ``input()`` and ``sys.stdin``, its output is what it printed to
``sys.stdout`` (see :mod:`cure.sandbox.worker` for the exact semantics and the limits).

Each record also carries ``rollout_fingerprint``: a short hash per program (``codes``) and per test column
(``gt_tests`` then ``tests``) of the rollout row it was computed from, so that the reward stage can refuse a table
that does not belong to the rollouts it is given (another file, reordered or edited rows):
:func:`check_fingerprints`.

Identical programs within a task are run once and their row is copied, and a program runs once per distinct test
input: its output is compared with the expected output of every column that shares the input (ground-truth and
generated tests alike). A program's verdict depends on nothing but its text and its input, as each program runs in a
process of its own forked from a clean template (:mod:`cure.sandbox.worker`); programs are deterministic under
these semantics up to their own use of randomness, which a fresh process would not reproduce either. A timeout is
still re-checked as before. Each record counts ``executions``: ``requested`` (program x test cells with a program
and a test) and ``run`` (program runs it took); :func:`summarize_executions` sums them over a round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cure.sandbox.pool import Job, Limits, SandboxPool
from cure.validate import STATUSES, ArtifactError, check_rollouts, where_of

if TYPE_CHECKING:  # the sandbox image runs this module with the standard library only (no pydantic)
    from cure.config import ExecuteConfig

log = logging.getLogger(__name__)

# A program's tests are split into jobs of at most this many, so that a few slow programs spread over the
# sandboxes instead of queueing behind each other. Each job costs a few host round trips (~2 ms under gVisor),
# so CURE's 8 + 16 tests stay one job.
TESTS_PER_JOB = 32



FINGERPRINT = "rollout_fingerprint"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def rollout_fingerprint(rec: dict[str, Any]) -> dict[str, list[str]]:
    """What an execution table was computed from: a hash per program and per test column of the rollout record."""
    return {"codes": [_digest(c) for c in rec["codes"]],
            "tests": [_digest(t) for t in list(rec["gt_tests"]) + list(rec.get("tests") or [])]}


def check_fingerprints(rollouts: Sequence[dict[str, Any]], executions: Sequence[dict[str, Any]]) -> int:
    """Refuse execution records whose fingerprint differs from their rollout's (:class:`cure.validate.ArtifactError`
    naming the record, the row or column, and what to do). Records joined by ``task_id``; records without a
    fingerprint (written before it existed) are not checked. Returns how many records were checked."""
    by_id = {e["task_id"]: (j, e) for j, e in enumerate(executions)}
    checked = 0
    for i, r in enumerate(rollouts):
        if r["task_id"] not in by_id or FINGERPRINT not in by_id[r["task_id"]][1]:
            continue
        j, e = by_id[r["task_id"]]
        where = f"{where_of(executions, j, 'execution record')}: field {FINGERPRINT!r}"
        got, want = e[FINGERPRINT], rollout_fingerprint(r)
        if not (isinstance(got, dict) and all(isinstance(got.get(k), list) for k in want)):
            raise ArtifactError(f"{where}: expected {{'codes': [...], 'tests': [...]}}, got {str(got)[:80]}")
        for key, what in (("codes", "program"), ("tests", "test column")):
            if len(got[key]) != len(want[key]):
                raise ArtifactError(f"{where}: {len(got[key])} {what}s, but the rollout "
                                    f"({where_of(rollouts, i, 'rollout record')}) has {len(want[key])}")
            bad = next((k for k, (a, b) in enumerate(zip(got[key], want[key])) if a != b), None)
            if bad is not None:
                raise ArtifactError(
                    f"{where}: {what} {bad} of task {r['task_id']!r} is not the one in the rollout "
                    f"({where_of(rollouts, i, 'rollout record')}): the table was computed from other rollout rows "
                    "(another file, or rows reordered or edited since); run `cure execute` on these rollouts")
        checked += 1
    return checked


def _valid_test(t: Any) -> bool:
    return isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)


def _columns(rec: dict[str, Any]) -> tuple[list[dict[str, str] | None], int]:
    gt = rec["gt_tests"]
    return list(gt) + [t if _valid_test(t) else None for t in rec.get("tests", [])], len(gt)


def _plan(rollouts: list[dict[str, Any]], default_time_limit: float) -> tuple[list[dict], list[Job]]:
    """Turn rollout records into empty tables plus the jobs (one per distinct program per task) that fill them.

    The records have passed :func:`cure.validate.check_rollouts` (field types, time limits in (0, 3600]).
    """
    tables, jobs = [], []
    for rec in rollouts:
        cols, num_gt = _columns(rec)
        raw = rec.get("time_limit_s")
        limit = float(default_time_limit if raw is None else raw)
        codes = rec["codes"]
        typing_names = bool(rec.get("typing_names"))
        status = [["no_test" if c is None else "" for c in cols] for _ in codes]
        table = {"task_id": rec["task_id"], "num_gt": num_gt, "status": status}
        tables.append(table)
        # The live columns, those sharing an input next to each other: a job runs its program once per distinct
        # input (pool._Sandbox.run), so columns with one input must not be split across jobs.
        by_input: dict[str, list[int]] = {}
        for k, c in enumerate(cols):
            if c is not None:
                by_input.setdefault(c["input"], []).append(k)
        chunks = list(by_input.values())
        chunks = [[k for g in chunks[i : i + TESTS_PER_JOB] for k in g] for i in range(0, len(chunks), TESTS_PER_JOB)]
        table["requested"] = 0
        by_code: dict[str, list[Job]] = {}
        for row, code in enumerate(codes):
            if not isinstance(code, str) or not code.strip():
                status[row] = ["no_code"] * len(cols)
                continue
            table["requested"] += sum(map(len, chunks))
            if code not in by_code:
                by_code[code] = []
                for part in chunks:
                    tests = [(cols[k]["input"], cols[k]["output"]) for k in part]  # type: ignore[index]
                    by_code[code].append(Job(code=code, tests=tests, time_limit=limit, key=(len(tables) - 1, part, []),
                                             typing_names=typing_names))
                jobs.extend(by_code[code])
            for job in by_code[code]:
                job.key[2].append(row)  # type: ignore[index]
    return tables, jobs


def sandbox_pool(cfg: ExecuteConfig, jobs: int | None = None) -> SandboxPool:
    """A sandbox pool with the ``execute`` section's isolation, workers and limits (use as a context manager);
    ``jobs`` caps the number of sandboxes at the work there is."""
    limits = Limits(memory_mb=cfg.memory_mb, output_limit=cfg.output_limit_bytes, wall_factor=cfg.wall_factor)
    return SandboxPool(cfg.isolation, workers=cfg.workers, limits=limits, jobs=jobs)


def execute_rollouts(rollouts: list[dict[str, Any]], cfg: ExecuteConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run every program of every rollout record against its tests; return one execution record per task.

    Records keep their order; each is ``{"task_id", "num_gt", "passed", "status"}`` (see the module docstring).
    The rollouts are checked first (:func:`cure.validate.check_rollouts`: unique task ids, field types).
    """
    check_rollouts(rollouts)
    tables, jobs = _plan(rollouts, default_time_limit=1.0)
    total = sum(len(j.tests) * len(j.key[2]) for j in jobs)  # type: ignore[index]
    report = _Progress(total, enabled=progress)
    if jobs:
        with sandbox_pool(cfg, jobs=len(jobs)) as pool:
            pool.run(jobs, on_done=lambda job: report.add(len(job.tests) * len(job.key[2])))  # type: ignore[index]
    report.close()
    for job in jobs:
        t, live, rows = job.key  # type: ignore[misc]
        for row in rows:
            for k, st in zip(live, job.status):
                tables[t]["status"][row][k] = st
    out = []
    runs = [0] * len(tables)
    for job in jobs:
        runs[job.key[0]] += job.runs  # type: ignore[index]
    for table, rec, run in zip(tables, rollouts, runs):
        status = table["status"]
        out.append(
            {
                "task_id": table["task_id"],
                "num_gt": table["num_gt"],
                "passed": [[s == "pass" for s in row] for row in status],
                "status": status,
                FINGERPRINT: rollout_fingerprint(rec),
                # program x test cells to fill, and program runs it took (identical programs, and tests with
                # one input, share a run)
                "executions": {"requested": table["requested"], "run": run},
            }
        )
    return out


class _Progress:
    """A tqdm bar on a terminal; plain log lines (every ~10 s) otherwise, e.g. in a pod's log."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.start, self.last = total, 0, time.monotonic(), 0.0
        self.bar = None
        self.enabled = enabled and total > 0
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="exec", desc="execute")

    def add(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last > 10:
            self.last = time.monotonic()
            rate = self.done / max(self.last - self.start, 1e-9)
            log.info("executed %d/%d (%.0f/s)", self.done, self.total, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            elapsed = time.monotonic() - self.start
            log.info("executed %d in %.1fs (%.0f/s)", self.done, elapsed, self.done / max(elapsed, 1e-9))


def summarize_status(executions: list[dict[str, Any]]) -> dict[str, int]:
    """Count of cells per status over all tables (for logs and reports)."""
    counts = dict.fromkeys(STATUSES, 0)
    for rec in executions:
        for row in rec["status"]:
            for s in row:
                counts[s] = counts.get(s, 0) + 1
    return counts


def summarize_executions(executions: list[dict[str, Any]]) -> dict[str, int]:
    """Executions requested (cells) and run (program runs) over all records; records without counts are skipped."""
    counts = [e["executions"] for e in executions if isinstance(e.get("executions"), dict)]
    return {"executions_requested": sum(int(c.get("requested", 0)) for c in counts),
            "executions_run": sum(int(c.get("run", 0)) for c in counts)}
