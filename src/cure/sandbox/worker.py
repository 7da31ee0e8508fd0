"""The code-running worker: a long-lived process that runs untrusted programs against tests.

It runs inside the sandbox (as the init process of a gVisor container, or as a plain child process with
``--isolation none``) and depends on the standard library only: the sandbox mounts this one file next to a bare
Python. Protocol, one JSON object per line: the host writes a job to stdin, the worker answers on stdout::

    job    {"id": 7, "code": "...", "tests": [["input", "expected"], ...], "time_limit": 1.0,
            "wall_limit": 4.0, "memory_mb": 1024, "output_limit": 1048576}
    answer {"id": 7, "status": ["pass", "fail", "timeout", ...]}

A test may also carry a list of expected outputs, ``["input", ["expected 1", "expected 2"]]``: the program runs once
on the input and its output is compared with each; that test's status is then the list of their statuses (how the
host runs the columns of a table that share an input once: :meth:`cure.sandbox.pool._Sandbox.run`).

A job with ``"want_output": true`` is also answered ``"outputs"``: per test, what the program printed (its first
``OUTPUT_ECHO`` characters) when it ran to the end, else null; refinement prompts show it.

Semantics are CURE's (``optimization/execute.py`` of the reference): the program is ``exec``-uted as
``__main__`` in a fresh namespace whose ``input`` reads the test input line by line (a job with
``"typing_names": true`` also finds ``List``, ``Tuple`` and ``Optional`` from ``typing`` there, as the reference's
``evaluation/eval.py`` predefines them), ``sys.stdin`` reads it as a
file, ``sys.stdout`` is captured; ``SystemExit`` keeps the output, any other exception loses it (status
``error``); the output is compared whitespace-normalised (``" ".join(a.split()) == " ".join(b.split())``).

Why the process layout looks like this (measured under gVisor's ptrace platform, where a ``fork`` costs ~10-20 ms
and every system call ~15 us): the worker (trusted, pid 1 of the sandbox) is the *template*: it imports the
preloaded modules once and never runs a program itself. Every program runs in a *runner*, an unprivileged process
forked from the worker for that program alone, so no interpreter state a program changes (module globals,
contexts such as ``decimal.getcontext()``, registries such as ``copy._deepcopy_dispatch`` or the ABCs', caches,
rlimits, signal handlers, cwd, umask, environment, files in its temp dir) can reach another program: the next
program's process starts from the worker's state again, by construction, whatever the program did and however it
did it. The next program's runner is forked ahead (:meth:`Worker.recycle`), while the host reads the answer.

Between the tests of ONE program the runner is reused (one fork per program, not per test) and each test runs in a
fresh namespace; a fresh runner is forked for the next test of the same program whenever

* a test ended abnormally (timeout, memory, output limit, crash, ``RecursionError``, ``BaseException``),
* the program could have changed state that outlives a test: the source names anything that reaches the OS,
  threads, signals, files, imports by name or introspection (:func:`needs_fresh_process`; such a program gets a
  fresh runner for every test), or a check after the test finds changed interpreter state (a shallow change to
  any module loaded before the program ran, recursion / int-digits limits, tracing, live threads). Modules a
  test imported are dropped from ``sys.modules`` so the next test imports them afresh.

Limits, enforced by the kernel (gVisor's) rather than by polling: CPU time per test with ``ITIMER_PROF`` (its
default action kills the process; CPU time, not wall time, so the verdict does not depend on the load),
``RLIMIT_CPU`` as a backstop, ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, ``RLIMIT_NOFILE``, no
core files. A wall-clock limit per test (``SO_RCVTIMEO`` on the verdict socket, no polling) catches sleepers.

gVisor's ptrace platform charges a task CPU time also while its host thread waits for a host CPU, so on a loaded
host a CPU timeout may be inflated. With ``confirm_cpu`` the worker asks the host (one JSON line on stdout, the
answer on stdin) for the sandbox's real CPU time, as the host kernel counts it: a timeout stands at once when the
runner timed out on its first test and the host confirms it really burnt that CPU; otherwise the test is re-run
alone with the limit enforced on the host's measure (:meth:`Worker._confirm_timeout`). Inside an outer gVisor
sandbox (a pod of the cluster Job, a local sandbox container), where the host's measure is out of reach, the job
says ``recheck_timeouts`` instead: a test that timed out is run once more, alone, and that verdict stands
(:meth:`Worker._rerun_alone`).

The runner drops to an unprivileged user when the worker runs as root (it then cannot signal or trace the
worker, nor write outside its temp dir), gets a private temp dir as cwd, an environment with nothing but
PATH/HOME/TMPDIR/LANG, and stdin/stdout/stderr on /dev/null. When a runner ends, everything it started is
killed: as pid 1 the worker sends SIGKILL to every other process (``kill(-1)``); otherwise it kills its
descendants found under /proc (it is their subreaper).
"""

from __future__ import annotations

import _thread
import ast
import builtins
import gc
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable

# Preloaded so that programs find them already imported (cheap tests) and so that their state is checked.
PRELOAD = (
    "abc array bisect calendar cmath collections collections.abc copy dataclasses datetime decimal enum "
    "fractions functools hashlib heapq itertools math numbers operator queue random re statistics string "
    "textwrap typing unicodedata"
).split()
# The third-party packages programs may import (numpy, pandas, scipy and what they need) sit in one folder that the
# sandbox mounts read-only (cure.sandbox.gvisor.program_package_paths) and names in PYTHONPATH; the worker's Python
# runs without site.
# numpy is preloaded as in the reference, whose programs run in a process that imported it: importing it costs a
# program nothing. pandas and scipy (heavier, and rarer in programs) are imported by the runner of a program that
# names them before its CPU timer starts (:func:`heavy_imports`), so that their import is not charged either.
PRELOAD_PACKAGES = ("numpy",)
HEAVY_PACKAGES = ("pandas", "scipy")
for _name in PRELOAD:
    try:
        __import__(_name)
    except ImportError:  # a minimal Python may lack one (e.g. hashlib without OpenSSL); programs will see that too
        pass
# The modules the between-test check compares (:func:`_snapshot_modules`): the standard library's. numpy's hundreds
# of modules are left out: only a program that names numpy (or reaches modules by name, or introspects) could touch
# them, and such a program runs every test in a fresh runner (:data:`RISKY_NAMES`). Comparing them after each test
# would cost every program a page fault per page of numpy's module state in its freshly forked process.
CHECKED_MODULES = frozenset(sys.modules)
for _name in PRELOAD_PACKAGES:
    try:
        __import__(_name)
    except ImportError:  # not installed for this Python: programs will not find it either
        pass



class _Quitter:
    """``exit()`` / ``quit()`` as ``site`` defines them (the worker's Python runs without ``site``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, code: object = None) -> None:
        raise SystemExit(code)


for _name in ("exit", "quit"):
    if not hasattr(builtins, _name):
        setattr(builtins, _name, _Quitter(_name))

UNPRIVILEGED = 65534  # nobody
# The uid this worker gives its programs. Several workers inside one outer sandbox (the shard's pool) each get their
# own (``CURE_SANDBOX_UID``, set by the pool): a worker there kills leftovers by uid, which must not reach another
# worker's running program.
PROGRAM_UID = int(os.environ.get("CURE_SANDBOX_UID", UNPRIVILEGED))
MAX_PROCS = 32
MAX_OPEN_FILES = 64
MAX_FILE_BYTES = 16 << 20
CPU_BACKSTOP_S = 600  # RLIMIT_CPU of a runner: a backstop only; per-test CPU limits use ITIMER_PROF
EXIT_RESTART = 75
CONFIRM_TRIES = 3
CONFIRM_STRETCH = 3.0  # in a confirmation run the in-sandbox CPU timer is only a backstop at 3 x the limit
OUTPUT_ECHO = 2000  # characters of a test's output answered with want_output (feedback prompts need only a glimpse)
TICK_S = 0.05  # how often a confirmation run asks the host for the sandbox's real CPU time
CONFIRM_SHARE = 0.8  # a timeout is confirmed when the run used >= this share of the limit in real host CPU  # child: "state may have changed, start a fresh process for the next test"
_HDR = struct.Struct("<IIB")  # test index, payload length, status code

OK, ERROR, MEMORY, OUTPUT_LIMIT, RESTART = range(5)
READY = 0xFFFFFFFF  # test index of the frame a runner sends once it has imported a program's heavy packages
PREIMPORT_WAIT_S = 120.0  # how long the worker waits for that frame
LEAVING = 0x80  # flag on a verdict: the runner exits after it (the next test needs a fresh process)
_CODE_STATUS = {ERROR: "error", MEMORY: "memory", OUTPUT_LIMIT: "output_limit"}

# Names whose presence in a program means it may change process state that outlives one test; such a program
# runs each test in its own process. Conservative on purpose: a false positive only costs a fork.
RISKY_NAMES = frozenset(
    """
    os posix nt sys.path sys.modules sys.meta_path subprocess multiprocessing concurrent threading _thread signal
    ctypes cffi gc atexit faulthandler resource pty fcntl mmap socket ssl asyncio selectors select shutil tempfile
    pathlib glob io open __import__ importlib exec eval compile getattr setattr delattr globals vars locals
    builtins __builtins__ __dict__ __class__ __subclasses__ __bases__ __mro__ __globals__ __code__ __closure__
    breakpoint pdb inspect sqlite3 dbm shelve pickle marshal copyreg codecs locale warnings logging time sched
    weakref sysconfig site __loader__ __spec__ setrecursionlimit set_int_max_str_digits settrace setprofile
    setswitchinterval __stdout__ __stderr__ __stdin__ numpy pandas scipy
    """.split()
)
# (numpy, pandas and scipy keep state of their own that the between-test check cannot see: random generators,
# error modes, print options. A program that names them runs each test in a fresh process.)


def needs_fresh_process(code: str) -> bool:
    """True when the program names anything through which one test could leave state for the next."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True
    imported = {
        (a.asname or a.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for a in node.names
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            root = node.value
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if not isinstance(root, ast.Name) or root.id in imported:
                return True  # e.g. `collections.Counter.x = 1`: a change to an imported object, deeper than checked
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if isinstance(node.value, ast.Name) and f"{node.value.id}.{name}" in RISKY_NAMES:
                return True
        elif isinstance(node, ast.alias):
            name = node.name.split(".")[0]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            continue
        else:
            continue
        if name in RISKY_NAMES or (name.startswith("__") and name not in ("__name__", "__init__", "__main__")):
            return True
    return False


def heavy_imports(code: str) -> list[str]:
    """The modules of :data:`HEAVY_PACKAGES` that the program imports by name (``import pandas as pd``, ``from
    scipy import optimize`` -> ``scipy.optimize`` too): its runner imports them before the program's clock starts."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
        else:
            continue
        out += [n for n in names if n.split(".")[0] in HEAVY_PACKAGES and n not in out]
    return out


# ----------------------------------------------------------------------------------------------------------
# Inside the program's process


class _OutputLimitExceeded(BaseException):
    """Raised from a write past the output cap; a BaseException so `except Exception` in a program does not eat it."""


class _CappedStdout(io.StringIO):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.size = 0
        self.exceeded = False

    def write(self, s: str) -> int:
        self.size += len(s)
        if self.size > self.cap:
            self.exceeded = True
            raise _OutputLimitExceeded()
        return super().write(s)


class _NullStderr(io.StringIO):
    def write(self, s: str) -> int:
        return len(s)


def _state_fingerprint() -> tuple:
    return (
        sys.getrecursionlimit(),
        sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0,
        sys.getswitchinterval(),
        sys.gettrace(),
        sys.getprofile(),
    )


def _snapshot_modules() -> dict[str, dict]:
    return {name: dict(m.__dict__) for name, m in list(sys.modules.items())
            if name != "__main__" and m is not None and name in CHECKED_MODULES}


def _run_one(code_obj: object, test_input: str, cap: int, typing_names: bool = False) -> tuple[int, str]:
    """One test, CURE's way. Returns (status code, captured output)."""
    lines = iter(test_input.splitlines())

    def fake_input(prompt: str = "") -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError("No more input") from None

    out = _CappedStdout(cap)
    sys.stdout = out
    sys.stdin = io.StringIO(test_input)
    sys.stderr = _NullStderr()
    namespace = {"__name__": "__main__", "__builtins__": builtins, "input": fake_input}
    if typing_names:
        import typing

        namespace.update(List=typing.List, Tuple=typing.Tuple, Optional=typing.Optional)  # noqa: UP006
    status = OK
    try:
        exec(code_obj, namespace)
    except SystemExit:
        pass
    except _OutputLimitExceeded:
        status = OUTPUT_LIMIT
    except MemoryError:
        status = MEMORY
    except RecursionError:
        status = RESTART  # recoverable, but the stack was exhausted: report error, then a fresh process
    except Exception:
        status = ERROR
    except BaseException:
        status = RESTART
    finally:
        sys.stdout, sys.stdin, sys.stderr = sys.__stdout__, sys.__stdin__, sys.__stderr__
    if out.exceeded:
        status = OUTPUT_LIMIT
    return status, (out.getvalue() if status == OK else "")


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _runner_main(job_fd: int, result_fd: int, tmpdir: str, limits: tuple[int, int], base_modules: frozenset, fingerprint: tuple) -> None:
    """Body of the unprivileged runner process: set up once, then run jobs sent by the worker until a test ends
    abnormally, the program may have left state behind, or the worker closes the job pipe."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.setsid()
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(PROGRAM_UID)
        os.setuid(PROGRAM_UID)
    os.chdir(tmpdir)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": tmpdir, "TMPDIR": tmpdir, "LANG": "C.UTF-8"})
    mem, cpu_backstop = limits
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_backstop, cpu_backstop + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCS, MAX_PROCS))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    baseline = _snapshot_modules()  # here, not in the worker: fork itself re-creates some module state (locks)
    while True:
        try:
            (size,) = struct.unpack("<I", _read_exact(job_fd, 4))
            job = json.loads(_read_exact(job_fd, size))
        except EOFError:
            os._exit(0)
        _run_tests(job, result_fd, base_modules, fingerprint, baseline)


def _run_tests(job: dict, result_fd: int, base_modules: frozenset, fingerprint: tuple, baseline: dict) -> None:
    tests = job["tests"]
    first = job["first"]
    limit = float(job["time_limit"])
    cap = int(job["output_limit"])
    if job.get("preimport"):
        for name in job["preimport"]:
            try:
                __import__(name)
            except BaseException:  # not a module, or broken: the program meets the same error itself
                pass
        os.write(result_fd, _HDR.pack(READY, 0, OK))  # the worker starts the test's wall clock now
    # CPU time from here on counts against the first test (compiling is part of running, as with exec(source)).
    # The timer is re-armed per test and never disarmed: while the runner waits for work it uses no CPU.
    signal.setitimer(signal.ITIMER_PROF, limit)
    try:
        code_obj = compile(job["code"], "<program>", "exec", dont_inherit=True)  # not this file's __future__ flags
    except BaseException:  # does not compile: every test is an error, nothing to run
        os.write(result_fd, b"".join(_HDR.pack(k, 0, ERROR) for k in range(first, len(tests))))
        return
    for k in range(first, len(tests)):
        if k != first:
            signal.setitimer(signal.ITIMER_PROF, limit)
        status, output = _run_one(code_obj, tests[k], cap, bool(job.get("typing_names")))
        payload = output.encode("utf-8", "surrogatepass")
        code = ERROR if status == RESTART else status
        leave = status not in (OK, ERROR) or job["fresh"]
        if not leave:
            if len(sys.modules) != len(base_modules) or sys.modules.keys() != base_modules:
                for name in [n for n in sys.modules if n not in base_modules]:
                    del sys.modules[name]
            leave = _state_fingerprint() != fingerprint or _threads_alive() or _modules_changed(baseline)
        _write_all(result_fd, _HDR.pack(k, len(payload), code | (LEAVING if leave else 0)) + payload)
        if leave:
            os._exit(EXIT_RESTART)


def _threads_alive() -> bool:
    return _thread._count() > 0


def _modules_changed(baseline: dict[str, dict]) -> bool:
    modules = sys.modules
    for name, snap in baseline.items():
        m = modules.get(name)
        if m is None or m.__dict__ != snap:
            return True
    return False


# ----------------------------------------------------------------------------------------------------------
# The worker (trusted side)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _verdicts(status: str | tuple | None, expected: str | list[str]) -> str | list[str]:
    """A test's final status: pass/fail for a run that ended normally, compared with the expected output (or each
    of a list of them); the run's status otherwise."""
    if isinstance(status, tuple):
        out = status[1]
        if isinstance(expected, list):
            return ["pass" if _same(out, e) else "fail" for e in expected]
        return "pass" if _same(out, expected) else "fail"
    final = "timeout" if status == "timeout_cpu" else (status or "error")
    return [final] * len(expected) if isinstance(expected, list) else final


def _kill_leftovers(worker_pid: int) -> None:
    """Kill every process the program started, then reap. pid 1 (the container's init) uses kill(-1)."""
    while True:
        if worker_pid == 1:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            # Inside an outer sandbox (a sandbox container or pod, where nothing else runs as PROGRAM_UID), orphans
            # that left the subreaper's tree (the container's pid 1 adopts them) are still the program's: the root
            # worker gave every program that uid. Never on a host, where other processes may run as nobody.
            found = _descendants(worker_pid) + (_pids_of_uid(PROGRAM_UID) if _in_outer_sandbox() else [])
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            if worker_pid == 1 or not (_descendants(worker_pid) or (_in_outer_sandbox() and _pids_of_uid(PROGRAM_UID, alive=True))):
                return
        time.sleep(0.001)


def _in_outer_sandbox() -> bool:
    return os.getuid() == 0 and bool(os.environ.get("CURE_SANDBOX_OUTER"))


def _pids_of_uid(uid: int, alive: bool = False) -> list[int]:
    """Processes whose real uid is ``uid`` (``alive``: not counting zombies, which only their parent can reap)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                if int(fields["Uid"].split()[0]) == uid and not (alive and fields["State"].split()[0] == "Z"):
                    out.append(int(entry))
            except (OSError, ValueError, KeyError, IndexError):
                continue
    return out


def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
                parent[int(entry)] = int(data[data.rindex(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], {root}
    while frontier:
        nxt = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out.extend(nxt)
        frontier = nxt
    return out


def _death_status(wait_status: int, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) in (signal.SIGPROF, signal.SIGXCPU):
        return "timeout_cpu"  # confirmed (or not) by run_job, then reported as "timeout"
    if os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL:
        return "timeout"
    return "error"


class _Runner:
    """The worker's handle on one runner process."""

    def __init__(self, pid: int, job_fd: int, sock: socket.socket, tmpdir: str, limits: tuple[int, int]) -> None:
        self.pid, self.job_fd, self.sock, self.tmpdir, self.limits = pid, job_fd, sock, tmpdir, limits
        self.wall = -1.0
        self.host_cpu0 = -1.0  # the sandbox's real CPU seconds (host's measure) when this runner started
        self.cpu = 0.0  # the runner's CPU seconds by the sandbox's clock, known once it is reaped
        self.verdicts = 0  # verdicts it has reported
        self.ready_cpu = -1.0  # the host's measure when it reported its heavy imports done
        self.jobs = 0  # jobs sent to it (all of one program: a runner never serves a second program)


class Worker:
    """Trusted side. Keeps one runner process and reuses it from program to program while nothing could leak."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.counter = 0
        self.tmp_root = os.environ.get("CURE_SANDBOX_TMP") or "/tmp"
        if self.pid != 1:
            _set_child_subreaper()
        gc.collect()
        gc.freeze()
        self.base_modules = frozenset(sys.modules)
        self.fingerprint = _state_fingerprint()
        self.runner: _Runner | None = None
        self.host_cpu: Callable[[], float] | None = None  # the sandbox's real CPU seconds, asked of the host
        self.measure = False  # this job's CPU timeouts are checked against the host's measure
        self.ended: _Runner | None = None
        self.last_outputs: list[str | None] | None = None
        self.limits: tuple[int, int] | None = None  # the last job's, for the runner started ahead (:meth:`recycle`)

    def recycle(self) -> None:
        """Between two jobs: end the runner that served the last one (and whatever its program left running), and
        start the next job's runner ahead, while the host reads the answer and picks the next job."""
        if self.runner is not None and self.runner.jobs:
            self._end_runner(kill=True)
        if self.runner is None and self.limits is not None:
            self._start_runner(self.limits)

    def run_job(self, job: dict) -> list:
        tests = [t[0] for t in job["tests"]]
        expected = [t[1] for t in job["tests"]]
        n = len(tests)
        if job.get("code") is None:
            return ["no_code"] * n
        status: list[str | None] = [None] * n
        # want_output: also answer each test's output (up to OUTPUT_ECHO characters), for feedback prompts.
        self.last_outputs = [None] * n if job.get("want_output") else None
        fresh = needs_fresh_process(job["code"])
        self.measure = bool(job.get("confirm_cpu")) and self.host_cpu is not None
        limits = (int(job["memory_mb"]) << 20, CPU_BACKSTOP_S)
        self.limits = limits
        if self.runner is not None and self.runner.jobs:
            self._end_runner(kill=True)  # a program never runs in a process that ran another program
        msg = {k: job[k] for k in ("code", "time_limit", "output_limit")} | {"tests": tests, "fresh": fresh,
                                                                             "typing_names": bool(job.get("typing_names")),
                                                                             "preimport": heavy_imports(job["code"])}
        nxt = 0
        while nxt < n:
            if self.runner is not None and (self.runner.limits != limits or fresh):
                self._end_runner(kill=True)
            runner = self.runner or self._start_runner(limits)
            msg["first"] = nxt
            nxt = self._feed(runner, msg, expected, float(job["wall_limit"]), status)
            if fresh and self.runner is not None:
                self._end_runner(kill=True)
        if self.measure:
            for k in [k for k, st in enumerate(status) if st == "timeout_cpu"]:
                status[k] = self._confirm_timeout(msg, k, expected[k], float(job["wall_limit"]), limits)
        elif job.get("recheck_timeouts"):
            for k in [k for k, st in enumerate(status) if st in ("timeout", "timeout_cpu")]:
                status[k] = self._rerun_alone(msg, k, expected[k], float(job["wall_limit"]), limits)
        return [_verdicts(s, e) for s, e in zip(status, expected)]

    def _rerun_alone(self, msg: dict, k: int, expected: object, wall: float, limits: tuple[int, int]) -> str | tuple:
        """Run test ``k`` once more, alone on a fresh runner; its verdict replaces the timeout.

        For a worker inside an outer gVisor sandbox (a pod of the cluster Job, a local sandbox container): the
        host's measure of CPU time is out of reach there, and the sandbox's clock also runs while the program waits
        for a host CPU (see :meth:`_confirm_timeout`), so on a contended node a program can time out having used
        less than its limit. A program that really runs too long times out again: it costs its limit twice."""
        if self.runner is not None:
            self._end_runner(kill=True)
        one = dict(msg, tests=[msg["tests"][k]], first=0, fresh=True)
        st: list[str | None] = [None]
        self._feed(self._start_runner(limits), one, [expected], wall, st)
        if self.runner is not None:
            self._end_runner(kill=True)
        return st[0] or "error"

    def _confirm_timeout(self, msg: dict, k: int, expected: object, wall: float, limits: tuple[int, int]) -> str | tuple:
        """Re-run test ``k`` alone, its CPU limit enforced on the host's measure of the sandbox's real CPU time.

        Why: under gVisor's ptrace platform the sandbox's CPU clock also advances while the program waits for a
        host CPU, so on a loaded host a program can reach its limit having used much less real CPU. In the
        re-run the in-sandbox timer only backstops (``CONFIRM_STRETCH`` x the limit); the host is asked every
        ``TICK_S`` how much CPU the sandbox really used, and the run is stopped as a timeout when that reaches
        the limit. A re-run that is starved even of the stretched budget is tried again (``CONFIRM_TRIES``).
        """
        assert self.host_cpu is not None
        host_cpu = self.host_cpu
        limit = float(msg["time_limit"])
        one = dict(msg, tests=[msg["tests"][k]], first=0, fresh=True, time_limit=limit * CONFIRM_STRETCH)
        for _ in range(CONFIRM_TRIES):
            if self.runner is not None:
                self._end_runner(kill=True)
            runner = self._start_runner(limits)
            before = host_cpu()
            st: list[str | None] = [None]

            def start(r: _Runner = runner, b: float = before) -> float:
                return max(b, r.ready_cpu)  # the heavy imports before the program's clock do not count

            self._feed(runner, one, [expected], wall * CONFIRM_STRETCH, st, over=lambda: host_cpu() - start() >= limit)
            if self.runner is not None:
                self._end_runner(kill=True)
            used = host_cpu() - start()
            verdict = st[0] or "error"
            if verdict in ("timeout", "timeout_cpu"):
                if used >= CONFIRM_SHARE * limit:
                    return "timeout"
                continue
            return "timeout" if used > limit + TICK_S else verdict
        return "timeout"

    def _start_runner(self, limits: tuple[int, int]) -> _Runner:
        self.counter += 1
        tmpdir = os.path.join(self.tmp_root, f"run{self.counter}")
        os.mkdir(tmpdir, 0o700)
        if os.getuid() == 0:
            os.chown(tmpdir, PROGRAM_UID, PROGRAM_UID)
        job_r, job_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(job_w)
                mine.close()
                _runner_main(job_r, theirs.fileno(), tmpdir, limits, self.base_modules, self.fingerprint)
            finally:
                os._exit(EXIT_RESTART + 1)
        os.close(job_r)
        theirs.close()
        self.runner = _Runner(pid, job_w, mine, tmpdir, limits)
        return self.runner

    def _end_runner(self, kill: bool) -> int:
        """Stop the runner (SIGKILL its group when ``kill``), reap it, kill leftovers; return its wait status."""
        r, self.runner = self.runner, None
        assert r is not None
        if kill:
            _kill_group(r.pid)
        os.close(r.job_fd)
        r.sock.close()
        _, wait_status, usage = os.wait4(r.pid, 0)
        r.cpu = usage.ru_utime + usage.ru_stime
        self.ended = r
        _kill_leftovers(self.pid)
        shutil.rmtree(r.tmpdir, ignore_errors=True)
        return wait_status

    def _feed(
        self, r: _Runner, msg: dict, expected: list[str], wall: float, status: list, over: Callable[[], bool] | None = None
    ) -> int:
        """Send the job from test ``msg['first']`` to the runner and collect verdicts; return the next test to run.

        ``over``, when given, is asked every ``TICK_S`` whether the test has used up its limit (a timeout)."""
        first = msg["first"]
        if self.measure and not r.jobs:
            r.host_cpu0 = self.host_cpu()  # type: ignore[misc]
        r.jobs += 1
        body = json.dumps(msg).encode()
        try:
            os.write(r.job_fd, struct.pack("<I", len(body)))
            _write_all(r.job_fd, body)
        except BrokenPipeError:
            pass
        if msg.get("preimport"):
            if not self._await_ready(r):
                self._end_runner(kill=True)
                status[first] = "error"
                return first + 1
            if self.measure:
                r.ready_cpu = self.host_cpu()  # type: ignore[misc]
        step = TICK_S if over is not None else wall
        if r.wall != step:
            _set_recv_timeout(r.sock, step)
            r.wall = step
        buf = bytearray()
        k_next, n = first, len(expected)
        test_start = time.monotonic()
        timed_out = dead = leaving = False
        cap = int(msg["output_limit"]) * 4 + 64
        while k_next < n:
            try:
                chunk = r.sock.recv(1 << 20)
            except BlockingIOError:  # SO_RCVTIMEO: no verdict within the wall-clock limit (or a tick)
                if over is None or time.monotonic() - test_start >= wall or over():
                    timed_out = True
                    break
                continue
            except OSError:
                chunk = b""
            if not chunk:
                dead = True
                break
            buf += chunk
            while len(buf) >= _HDR.size and not leaving:
                k, length, code = _HDR.unpack_from(buf)
                if k != k_next or length > cap:  # the program wrote on our socket: treat it as a crash
                    dead = True
                    break
                if len(buf) < _HDR.size + length:
                    break
                leaving = bool(code & LEAVING)
                code &= ~LEAVING
                if code == OK:
                    out = bytes(buf[_HDR.size : _HDR.size + length]).decode("utf-8", "replace")
                    status[k] = (OK, out)  # compared with the expected output(s) at the end (_verdicts)
                    if self.last_outputs is not None and len(self.last_outputs) == n:
                        self.last_outputs[k] = out[:OUTPUT_ECHO]
                else:
                    status[k] = _CODE_STATUS.get(code, "error")
                del buf[: _HDR.size + length]
                r.verdicts += 1
                k_next = k + 1
                test_start = time.monotonic()
            if dead or leaving:
                break
            if buf:  # a partial frame: the rest must still come within this test's wall-clock limit
                left = wall - (time.monotonic() - test_start)
                if left <= 0:
                    timed_out = True
                    break
                _set_recv_timeout(r.sock, min(left, step))
                r.wall = min(left, step)
        if not (timed_out or dead or leaving):
            return k_next
        wait_status = self._end_runner(kill=True)
        if leaving and not (timed_out or dead):
            return k_next  # the runner reported a verdict and left: the next test gets a fresh process
        status[k_next] = _death_status(wait_status, timed_out)
        if status[k_next] == "timeout_cpu" and self.measure and over is None and self._uncontended(r):
            status[k_next] = "timeout"  # the sandbox really burnt the CPU its clock counted: no re-run needed
        return k_next + 1

    def _await_ready(self, r: _Runner) -> bool:
        """Wait for the runner's READY frame (its heavy imports done): False if it died or never sent it."""
        _set_recv_timeout(r.sock, PREIMPORT_WAIT_S)
        r.wall = PREIMPORT_WAIT_S
        buf = b""
        try:
            while len(buf) < _HDR.size:
                chunk = r.sock.recv(_HDR.size - len(buf))
                if not chunk:
                    return False
                buf += chunk
        except OSError:
            return False
        return _HDR.unpack(buf) == (READY, 0, OK)

    def _uncontended(self, r: _Runner) -> bool:
        """For a runner that timed out on its first test: did the host give it (nearly) all the CPU time that
        the sandbox's clock charged it? (For a runner that ran earlier tests the window would include them, so
        a contended last test could hide behind them: those timeouts are re-run instead.)"""
        assert self.host_cpu is not None
        if r.verdicts or r.host_cpu0 < 0:
            return False
        return self.host_cpu() - r.host_cpu0 >= CONFIRM_SHARE * r.cpu


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_recv_timeout(sock: socket.socket, seconds: float) -> None:
    sec = int(seconds)
    usec = max(int((seconds - sec) * 1e6), 1 if sec == 0 else 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, usec))


def _kill_group(pid: int) -> None:
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _set_child_subreaper() -> None:
    """Outside a container, orphans of a program re-parent to the worker so _kill_leftovers can find them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _set_not_dumpable() -> None:
    """No process of the same user may ptrace the worker (matters where the program cannot get another uid)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except (OSError, AttributeError):
        pass


def main() -> int:
    _set_not_dumpable()
    worker = Worker()
    inp = sys.stdin.buffer
    out = sys.stdout.buffer

    def host_cpu() -> float:
        out.write(b'{"cpu?": true}\n')
        out.flush()
        return float(json.loads(inp.readline())["cpu"])

    worker.host_cpu = host_cpu
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in inp:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            result = {"id": job.get("id"), "status": worker.run_job(job)}
            if job.get("want_output"):
                result["outputs"] = worker.last_outputs
        except Exception as e:  # a bug here must not silently lose a job: report it to the host
            result = {"id": job.get("id"), "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(result).encode() + b"\n")
        out.flush()
        worker.recycle()
    if worker.runner is not None:
        worker._end_runner(kill=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
