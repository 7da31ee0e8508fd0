"""Execute stage vs the reference code's method, on the same workloads (printed, never a timed test).

The reference method (Gen-Verse/CURE ``optimization/execute.py``), re-implemented faithfully: one
``multiprocessing.Process`` per (program, test) pair running ``exec()`` with a patched ``input`` and a captured
``sys.stdout``, started in chunks of 200, the chunk polled every millisecond until done, a pair killed when its
*wall-clock* time passes the limit. No isolation at all (this benchmark's programs are our own).

Workloads (:mod:`cure.sandbox.workload`, expected tables known by construction):

1. overhead-dominated: 30 tasks x 16 programs x (8 + 16) tests = 11,520 executions of right, wrong, crashing,
   partially-right and ``sys.exit``-ing programs. Reports the time of each method (sandbox start-up included)
   and the throughput ratio; target >= 5x with gVisor on.
2. CPU-heavy: adds programs that need ~0.3 s of CPU and programs that never end on some inputs. Reports false
   timeouts per method (a CPU-heavy correct program marked timeout) and this stage's time against the CPU floor
   (the programs' own CPU time / cores).

3. shared inputs (``--only dedup``, this stage only): the same batch twice, programs that each need ~0.05 s of CPU
   per run, once with test columns drawing their inputs from 3 per task (as a tester that repeats inputs) and once
   with every column its own input (equal cost per run). A program runs once per distinct input, so the first
   should be several times faster; both tables must equal the expected ones exactly.

Both methods' tables are compared with the expected tables; a mismatch is printed.

    python bench/bench_execute.py [--small] [--isolation gvisor|none] [--workers N] [--only overhead|cpu|dedup]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import platform
import sys
import threading
import time
from datetime import datetime, timezone

from cure.config import ExecuteConfig
from cure.execute import execute_rollouts, summarize_executions
from cure.sandbox import workload

CHUNK = 200


# ---- the reference method ---------------------------------------------------------------------------------


def _ref_worker(script: str, input_val: str, q: multiprocessing.Queue) -> None:
    lines = iter(input_val.splitlines())

    def fake_input(prompt: str = "") -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError("No more input") from None

    cap = io.StringIO()
    sys.stdout, sys.stdin = cap, io.StringIO(input_val)
    try:
        exec(script, {"__name__": "__main__", "input": fake_input})
        q.put(cap.getvalue())
    except SystemExit:
        q.put(cap.getvalue())
    except Exception as e:
        q.put(f"error: {e}")
    finally:
        sys.stdout, sys.stdin = sys.__stdout__, sys.__stdin__


def _ref_chunk(scripts: list[str], inputs: list[str], limit: float) -> list[str]:
    procs, queues, deadlines = [], [], []
    results: list[str | None] = [None] * len(scripts)
    for s, i in zip(scripts, inputs):
        q: multiprocessing.Queue = multiprocessing.Queue()
        p = multiprocessing.Process(target=_ref_worker, args=(s, i, q))
        p.start()
        procs.append(p)
        queues.append(q)
        deadlines.append(time.time() + limit)
    while any(p.is_alive() for p in procs):
        now = time.time()
        for k, p in enumerate(procs):
            if p.is_alive() and now >= deadlines[k]:
                p.terminate()
                results[k] = "Timeout Error"
        time.sleep(0.001)
    for k in range(len(procs)):
        if results[k] is None:
            try:
                results[k] = queues[k].get_nowait()
            except Exception as e:
                results[k] = f"Execution Error: {e}"
        queues[k].close()
    return results  # type: ignore[return-value]


def reference_tables(rollouts: list[dict]) -> list[list[list[str]]]:
    """Status tables by the reference method (pass / fail / timeout; the reference cannot tell errors apart)."""
    pairs = []
    for t, rec in enumerate(rollouts):
        cols = rec["gt_tests"] + rec["tests"]
        for r, code in enumerate(rec["codes"]):
            for c, test in enumerate(cols):
                pairs.append((t, r, c, code, test))
    tables = [[[""] * (len(rec["gt_tests"]) + len(rec["tests"])) for _ in rec["codes"]] for rec in rollouts]
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start : start + CHUNK]
        outs = _ref_chunk([p[3] for p in chunk], [p[4]["input"] for p in chunk], 1.0)
        for (t, r, c, _, test), out in zip(chunk, outs):
            if out == "Timeout Error":
                st = "timeout"
            else:
                st = "pass" if " ".join(out.split()) == " ".join(test["output"].split()) else "fail"
            tables[t][r][c] = st
    return tables


# ---- comparison -------------------------------------------------------------------------------------------


def _coarse(st: str) -> str:
    """The reference sees only pass / timeout / anything else."""
    return st if st in ("pass", "timeout") else "fail"


def mismatches(got: list, expected: list, coarse: bool = False) -> int:
    f = _coarse if coarse else (lambda s: s)
    return sum(f(g) != f(e) for gt, et in zip(got, expected) for gr, er in zip(gt, et) for g, e in zip(gr, er))


def false_timeouts(got: list, row_kinds: list[list[str]], expected: list) -> int:
    return sum(
        g == "timeout" and e != "timeout"
        for gt, et, kinds in zip(got, expected, row_kinds)
        for gr, er, _ in zip(gt, et, kinds)
        for g, e in zip(gr, er)
    )


def heavy_cpu_seconds(heavy_s: float) -> float:
    """CPU time of one run of the heavy program here (calibration for the CPU floor)."""
    code = workload.program("heavy", 3, heavy_s)
    t0 = time.process_time()
    exec(code, {"__name__": "__main__", "input": lambda *_: "1 2", "print": lambda *a: None})
    return time.process_time() - t0


class _CpuMeter:
    """CPU seconds used by this process and all its descendants (sandbox processes included, which are not
    always reaped by us, so RUSAGE_CHILDREN misses them): /proc sampled every 0.2 s, the last value per pid."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        parent, ticks = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                parent[int(entry)] = int(fields[1])
                ticks[int(entry)] = int(fields[11]) + int(fields[12])
        frontier = {os.getpid()}
        while frontier:
            for p in frontier:
                self.seen[p] = max(self.seen.get(p, 0), ticks.get(p, 0))
            frontier = {p for p, pp in parent.items() if pp in frontier}

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def __enter__(self) -> _CpuMeter:
        self._sample()
        self.start = dict(self.seen)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.used = sum(v - self.start.get(p, 0) for p, v in self.seen.items()) / os.sysconf("SC_CLK_TCK")


def run(name: str, rollouts: list, expected: list, row_kinds: list, cfg: ExecuteConfig, skip_ref: bool) -> dict:
    n = sum(len(r["codes"]) * (len(r["gt_tests"]) + len(r["tests"])) for r in rollouts)
    t0 = time.perf_counter()
    with _CpuMeter() as meter:
        ours = [rec["status"] for rec in execute_rollouts(rollouts, cfg, progress=False)]
    t_ours, c_ours = time.perf_counter() - t0, meter.used
    res = {"n": n, "ours_s": t_ours, "ours_cpu": c_ours, "ours_mismatch": mismatches(ours, expected), "ours_false_to": false_timeouts(ours, row_kinds, expected)}
    print(f"[{name}] {n} executions; this stage ({cfg.isolation}, {cfg.workers} workers): {t_ours:.1f}s "
          f"({n / t_ours:.0f}/s, {c_ours:.1f}s CPU), cells differing from expected: {res['ours_mismatch']}, false timeouts: {res['ours_false_to']}")
    if not skip_ref:
        t0 = time.perf_counter()
        ref = reference_tables(rollouts)
        t_ref = time.perf_counter() - t0
        res.update(ref_s=t_ref, ref_mismatch=mismatches(ref, expected, coarse=True), ref_false_to=false_timeouts(ref, row_kinds, expected))
        print(f"[{name}] reference method: {t_ref:.1f}s ({n / t_ref:.0f}/s), cells differing from expected "
              f"(pass/timeout/other): {res['ref_mismatch']}, false timeouts: {res['ref_false_to']}")
        print(f"[{name}] ratio (reference time / this stage's time): {t_ref / t_ours:.2f}x")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a quick run: fewer tasks")
    ap.add_argument("--isolation", default="auto", choices=["auto", "gvisor", "none"])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--only", choices=["overhead", "cpu", "dedup"])
    ap.add_argument("--no-reference", action="store_true", help="skip the reference method")
    args = ap.parse_args()
    cfg = ExecuteConfig(isolation=args.isolation, workers=args.workers or (os.cpu_count() or 1))
    cores = os.cpu_count() or 1
    print(f"# bench_execute {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {cores} cores, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} (other work on this machine skews the CPU floor comparison)")
    if args.only in (None, "overhead"):
        n_tasks = 5 if args.small else 30
        rollouts, expected, kinds = workload.make_rollouts(n_tasks, workload.KINDS_OVERHEAD)
        run("overhead", rollouts, expected, kinds, cfg, args.no_reference)
    if args.only in (None, "cpu"):
        heavy_s = 0.3
        n_tasks = 1 if args.small else 3
        kinds_cpu = workload.KINDS_OVERHEAD[:6] + ["heavy", "heavy", "hang"]
        rollouts, expected, kinds = workload.make_rollouts(n_tasks, kinds_cpu, heavy_s=heavy_s)
        cpu = heavy_cpu_seconds(heavy_s)
        n_heavy = sum(k == "heavy" for ks in kinds for k in ks) * 24
        n_hang = sum(e == "timeout" for t in expected for r in t for e in r)
        floor = (n_heavy * cpu + n_hang * 1.0) / cores
        res = run("cpu", rollouts, expected, kinds, cfg, args.no_reference)
        print(f"[cpu] heavy program: {cpu:.2f}s CPU per run here; {n_heavy} heavy runs, {n_hang} non-terminating "
              f"runs (1 s each); CPU floor {floor:.1f}s on {cores} cores; this stage / floor = {res['ours_s'] / floor:.2f}"
              f" (load average now {os.getloadavg()[0]:.1f}); CPU it used / the programs' CPU = "
              f"{res['ours_cpu'] / (floor * cores):.2f}")
    if args.only in (None, "dedup"):
        dedup(cfg, n_tasks=2 if args.small else 6)
    return 0


def dedup(cfg: ExecuteConfig, n_tasks: int) -> None:
    """Shared test inputs against distinct ones, same programs and cost per run, side by side."""
    kinds = workload.KINDS_OVERHEAD[:4] + ["heavy"] * 4
    times = {}
    for name, distinct in (("distinct inputs", 0), ("3 inputs per task", 3)):
        rollouts, expected, _ = workload.make_rollouts(n_tasks, kinds, heavy_s=0.05, seed=7, distinct_inputs=distinct)
        t0 = time.perf_counter()
        got = execute_rollouts(rollouts, cfg, progress=False)
        times[name] = time.perf_counter() - t0
        counts = summarize_executions(got)
        print(f"[dedup] {name}: {times[name]:.1f}s, executions requested {counts['executions_requested']}, run "
              f"{counts['executions_run']}, cells differing from expected: {mismatches([r['status'] for r in got], expected)}")
    print(f"[dedup] ratio (distinct inputs time / shared inputs time): {times['distinct inputs'] / times['3 inputs per task']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
