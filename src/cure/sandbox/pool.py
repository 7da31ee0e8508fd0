"""Host side: start N long-lived sandboxed workers and feed them jobs (one program + its tests per job).

A sandbox is started once and serves many jobs, so its start-up (~0.5 s for gVisor) is paid once per pool, not
per execution. Jobs are handed out dynamically (a thread per sandbox pulls the next job), so a slow program does
not hold up the others. A sandbox that dies or stops answering is replaced; its job's tests get ``error``
(or ``timeout`` when the host-side backstop fired), and the pool keeps serving the next jobs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cure.sandbox import gvisor

log = logging.getLogger(__name__)

Isolation = str  # "gvisor" | "none"


@dataclass
class Job:
    """One program and the tests it runs against. ``code`` None means there is no program (status no_code)."""

    code: str | None
    tests: list[tuple[str, str]]  # (input, expected output)
    time_limit: float = 1.0
    key: object = None
    typing_names: bool = False  # predefine List, Tuple, Optional (the reference's evaluation namespace)
    status: list[str] = field(default_factory=list)
    want_output: bool = False  # also collect what the program printed per test (None where it did not finish)
    outputs: list[str | None] = field(default_factory=list)
    runs: int = 0  # program runs it took: one per distinct test input (tests sharing an input share the run)


MAX_WALL_FACTOR = 100.0  # a wall-clock limit is at most this many times the CPU limit (+1 s)


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1024
    output_limit: int = 1 << 20
    wall_factor: float = 3.0

    def __post_init__(self) -> None:
        # Checked here too, not only where the config is loaded: a huge factor makes a sleeping program hold its
        # sandbox for days, and a non-finite one cannot be turned into a socket timeout.
        if not (isinstance(self.wall_factor, (int, float)) and math.isfinite(self.wall_factor)
                and 1.0 <= self.wall_factor <= MAX_WALL_FACTOR):
            raise ValueError(f"execute.wall_factor {self.wall_factor!r}: must be a finite number from 1 to {MAX_WALL_FACTOR:g}")
        for name in ("memory_mb", "output_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"sandbox limit {name} {value!r}: must be a positive integer")

    def wall(self, time_limit: float) -> float:
        return self.wall_factor * time_limit + 1.0


def pool_size(requested: int, jobs: int | None = None) -> int:
    """Sandboxes to start: the request (0 = one per CPU core), never more than the cores nor than the jobs."""
    cores = os.cpu_count() or 1
    if requested < 0:
        raise ValueError(f"execute.workers {requested}: must be >= 0 (0 = one sandbox per CPU core)")
    size = min(requested or cores, cores)
    return max(1, min(size, jobs)) if jobs is not None else size


def resolve_isolation(isolation: str) -> str:
    """``auto``/``gvisor`` -> "gvisor" (error if runsc is unusable, never a silent fallback); ``none`` -> "none"."""
    if isolation in ("auto", "gvisor"):
        gvisor.find_runsc()
        return "gvisor"
    if isolation == "none":
        return "none"
    raise ValueError(f"isolation {isolation!r}: expected one of auto, gvisor, none")


NONE_WARNING = (
    "\n" + "!" * 100 + "\n"
    "!!! --isolation none: UNTRUSTED PROGRAMS RUN ON THIS MACHINE WITHOUT A SANDBOX (only rlimits and an\n"
    "!!! unprivileged uid). For development only; never use it on model output you do not trust.\n" + "!" * 100
)


def program_uid(index: int) -> int:
    """The uid worker ``index`` of a pool inside an outer sandbox gives its programs: nobody (65534), then down."""
    return 65534 - index


class _Sandbox:
    """One worker process (inside ``runsc run`` or bare) and its pipes."""

    def __init__(self, isolation: str, workdir: Path, index: int) -> None:
        self.isolation = isolation
        self.workdir = workdir
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.container_id = ""
        self.start()

    # `runsc run` occasionally dies before its sandbox is up ("cannot read client sync file: waiting for sandbox to
    # start: EOF", seen a few times an hour on a busy 2-core host): such a start is retried with a fresh container.
    START_TRIES = 3

    def start(self) -> None:
        for attempt in range(1, self.START_TRIES + 1):
            try:
                self._start_once()
                return
            except RuntimeError as e:
                if self.isolation != "gvisor" or attempt == self.START_TRIES:
                    raise
                log.warning("%s; retrying (%d/%d)", e, attempt, self.START_TRIES - 1)
                self.stderr_tail = ""

    def _start_once(self) -> None:
        if self.isolation == "gvisor":
            runsc = gvisor.find_runsc()
            bundle = self.workdir / "bundle"
            self.container_id = f"cure-{uuid.uuid4().hex[:12]}"
            argv = gvisor.runsc_argv(runsc, self.workdir / "state", bundle, self.container_id)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            tmp = self.workdir / f"tmp{self.index}-{uuid.uuid4().hex[:6]}"
            tmp.mkdir(mode=0o711)
            argv = [sys.executable, "-s", "-S", "-B", str(gvisor.WORKER_DIR / "worker.py")]
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "CURE_SANDBOX_TMP": str(tmp),
                   "PYTHONPATH": str(self.workdir / "lib"), **dict(e.split("=", 1) for e in gvisor.THREADS_ENV)}
            if os.environ.get("CURE_SANDBOX_OUTER"):  # the worker may then clean up by uid (worker._kill_leftovers)
                env["CURE_SANDBOX_OUTER"] = os.environ["CURE_SANDBOX_OUTER"]
                # one program uid per worker: one worker's cleanup by uid must not kill another's running program
                env["CURE_SANDBOX_UID"] = str(program_uid(self.index))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        threading.Thread(target=self._drain_stderr, args=(self.proc,), daemon=True).start()
        line = self._readline(timeout=60.0)
        if line is None or b"ready" not in line:
            self.close()
            raise RuntimeError(
                f"sandbox {self.index} ({self.isolation}) did not start: {self.stderr_tail or 'no output'}"
                + (" (is runsc working? try `runsc --network=none do /bin/true` as root)" if self.isolation == "gvisor" else "")
            )

    stderr_tail = ""

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr_tail = (self.stderr_tail + line.decode("utf-8", "replace"))[-2000:]

    def _readline(self, timeout: float) -> bytes | None:
        """Read one line from the worker, or None on EOF / timeout (a thread, so the host never blocks forever)."""
        assert self.proc is not None and self.proc.stdout is not None
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive() or not box or not box[0]:
            return None
        return box[0]

    def run(self, job: Job, limits: Limits) -> list[str]:
        """Run one job; on a dead or hung worker, restart it and report the job's tests as error/timeout.

        Tests that share an input share one run of the program: the worker compares its output with each of their
        expected outputs (``job.runs`` counts the runs). Safe because a program's verdict depends on nothing but
        its text and its input: it runs in a process of its own, forked from a clean template (see
        :mod:`cure.sandbox.worker`)."""
        assert self.proc is not None and self.proc.stdin is not None
        inputs: dict[str, int] = {}
        groups: list[list[str]] = []
        where: list[tuple[int, int]] = []
        for inp, exp in job.tests:
            k = inputs.setdefault(inp, len(inputs))
            if k == len(groups):
                groups.append([])
            where.append((k, len(groups[k])))
            groups[k].append(exp)
        job.runs = len(groups)
        msg = {
            "id": 0,
            "code": job.code,
            "tests": [[inp, groups[k]] for inp, k in inputs.items()],
            "time_limit": job.time_limit,
            "wall_limit": limits.wall(job.time_limit),
            "memory_mb": limits.memory_mb,
            "output_limit": limits.output_limit,
            "confirm_cpu": self.isolation == "gvisor",
            # Inside an outer gVisor sandbox (no host measure there): a timeout is re-run once (worker._rerun_alone).
            "recheck_timeouts": self.isolation == "none" and bool(os.environ.get("CURE_SANDBOX_OUTER")),
            "typing_names": job.typing_names,
            "want_output": job.want_output,
        }
        # The worker enforces every limit itself; this only catches a hung worker. A CPU timeout may be re-run
        # up to 3 times with a 3x stretched budget (see worker.Worker._confirm_timeout), hence the factor 10.
        backstop = len(job.tests) * 10 * (limits.wall(job.time_limit) + 0.5) + 30.0
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()
            line = self._readline(timeout=backstop)
            while line is not None and line.startswith(b'{"cpu?"'):
                self.proc.stdin.write(json.dumps({"cpu": self.host_cpu()}).encode() + b"\n")
                self.proc.stdin.flush()
                line = self._readline(timeout=backstop)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            hung = self.proc.poll() is None
            log.warning("sandbox %d %s; restarting it. stderr: %s", self.index, "hung" if hung else "died", self.stderr_tail[-500:])
            self.close()
            self.start()
            return ["timeout" if hung else "error"] * len(job.tests)
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"sandbox worker failed on a job: {answer['error']}")
        outputs = answer.get("outputs") or []
        job.outputs = [outputs[k] for k, _ in where] if outputs else []
        return [answer["status"][k][j] for k, j in where]

    def host_cpu(self) -> float:
        """Real CPU seconds used so far by this sandbox's host processes (sentry, gofer, program stubs)."""
        assert self.proc is not None
        return _tree_cpu(self.proc.pid)

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        if self.isolation == "gvisor" and self.container_id:
            subprocess.run(
                [gvisor.find_runsc(), f"--root={self.workdir / 'state'}", "delete", "--force", self.container_id],
                capture_output=True,
            )


class SandboxTerminated(KeyboardInterrupt):
    """SIGTERM while a pool is open: raised in the main thread so the pool's ``with`` block cleans up."""


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _SignalGuard:
    """SIGTERM and SIGINT while a pool is open (main thread only).

    The first one unwinds the main thread, so that the pool's ``with`` block cleans up: it does what the handler in
    place before would do (a callable is called, e.g. the CLI's, which raises; Ctrl-C raises KeyboardInterrupt;
    SIGTERM left at its default raises :class:`SandboxTerminated` instead of killing the process with sandboxes and
    their folders left behind). From then on, and during any cleanup, further signals are only recorded: a second
    SIGTERM (``timeout`` sends more than one, so do impatient users) must not cut the cleanup short. After the
    cleanup the previous handlers are back, and a signal that came during a cleanup no signal started is
    delivered again."""

    def __init__(self) -> None:
        self.saved: dict[int, Any] = {}
        self.caught: list[int] = []
        self.unwinding = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.saved = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        for sig in _SIGNALS:
            signal.signal(sig, self._first)

    def _first(self, signum: int, frame: object) -> None:
        self.hold()
        self.unwinding = True
        previous = self.saved.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            self.unwinding = False
        else:
            raise SandboxTerminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _record(self, signum: int, frame: object) -> None:
        self.caught.append(signum)

    def hold(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                signal.signal(sig, self._record)

    def release(self) -> None:
        """Put the previous handlers back; re-deliver a signal held during a cleanup that no signal started."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            signal.signal(sig, self.saved.get(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL))
        caught, self.caught = self.caught, []
        if caught and not self.unwinding:
            signal.raise_signal(caught[0])


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> float:
    """utime+stime (+ those of reaped children) of ``root`` and all its live descendants, in seconds."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(x) for x in fields[11:15])
    total, frontier = 0, {root}
    while frontier:
        total += sum(ticks.get(p, 0) for p in frontier)
        frontier = {p for p, pp in parent.items() if pp in frontier}
    return total / _TICK


class SandboxPool:
    """N sandboxed workers. Use as a context manager; :meth:`run` executes jobs and fills ``job.status``."""

    def __init__(self, isolation: str = "auto", workers: int = 0, limits: Limits | None = None,
                 jobs: int | None = None) -> None:
        self.isolation = resolve_isolation(isolation)
        if self.isolation == "none":
            outer = os.environ.get("CURE_SANDBOX_OUTER")
            if outer:  # e.g. a pod with runtimeClassName gvisor: the sandbox is the pod itself
                log.info("isolation none inside an outer sandbox (%s)", outer)
            else:
                log.warning(NONE_WARNING)
        self.workers = pool_size(workers, jobs)
        self.limits = limits or Limits()
        self._dir = Path(tempfile.mkdtemp(prefix="cure-sandbox-"))
        self._dir.chmod(0o711)  # --isolation none: the unprivileged program must reach its temp dir below
        if self.isolation == "gvisor":
            gvisor.write_bundle(self._dir / "bundle")
        else:  # the packages programs may import, and nothing else of this Python's environment
            gvisor.link_packages(self._dir / "lib", gvisor.program_package_paths())
        self._boxes: list[_Sandbox] = []
        self._closing = False

    def __enter__(self) -> SandboxPool:
        self._signals = _SignalGuard()
        self._signals.install()
        starters = [threading.Thread(target=self._start_one, args=(i,)) for i in range(self.workers)]
        self._errors: list[BaseException] = []
        try:
            for t in starters:
                t.start()
            for t in starters:
                t.join()
        except BaseException:  # a signal while the sandboxes start: let them finish starting, then stop them all
            for t in starters:
                if t.is_alive():
                    t.join()
            self.close()
            raise
        if self._errors:
            self.close()
            raise self._errors[0]
        return self

    def _start_one(self, i: int) -> None:
        try:
            box = _Sandbox(self.isolation, self._dir, i)
            self._boxes.append(box)
        except BaseException as e:  # reported by __enter__
            self._errors.append(e)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every sandbox (processes and gVisor containers) and remove the pool's folder. Idempotent.

        A SIGTERM or SIGINT that arrives meanwhile (the second one of an impatient user, or of ``timeout``) waits
        until the cleanup is done, then takes effect: cleanup is bounded (5 s per sandbox at most), and an
        interrupted one would leave gVisor containers running and the pool's folder behind."""
        self._closing = True
        guard, self._signals = getattr(self, "_signals", None), None
        if guard is not None:
            guard.hold()
        try:
            for box in self._boxes:
                box.close()
            self._boxes = []
            shutil.rmtree(self._dir, ignore_errors=True)
        finally:
            if guard is not None:
                guard.release()

    def run(self, jobs: Iterable[Job], on_done: Callable[[Job], None] | None = None) -> list[Job]:
        """Run every job (longest first, so the tail is short); return them with ``status`` filled."""
        jobs = list(jobs)
        todo: queue.Queue[Job] = queue.Queue()
        for job in sorted(jobs, key=lambda j: -len(j.tests) * j.time_limit):
            if job.code is None:
                job.status = ["no_code"] * len(job.tests)
                if on_done:
                    on_done(job)
            elif not job.tests:
                job.status = []
            else:
                todo.put(job)
        failures: list[BaseException] = []
        lock = threading.Lock()

        def serve(box: _Sandbox) -> None:
            while not failures and not self._closing:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    job.status = box.run(job, self.limits)
                except BaseException as e:
                    failures.append(e)
                    return
                if on_done:
                    with lock:
                        on_done(job)

        threads = [threading.Thread(target=serve, args=(box,), daemon=True) for box in self._boxes]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        log.debug("ran %d jobs in %.2fs", len(jobs), time.monotonic() - start)
        return jobs
