"""Hostile programs under gVisor: each is contained, gets a status, leaves nothing running, and the sandbox keeps
serving the next job (one sandbox serves the whole suite, and a plain program runs after each hostile one)."""

from __future__ import annotations

import pytest
from sandbox_fixtures import no_leftover_processes

from cure.sandbox import Job, Limits, SandboxPool

pytestmark = pytest.mark.gvisor

LIMIT = 0.5  # seconds of CPU per test; the wall-clock limit is 3 x 0.5 + 1 = 2.5 s

# name -> (program, stdin, expected output, allowed statuses)
HOSTILE = {
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", "", "", {"error", "timeout"}),
    "fork_bomb_catching": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "",
        "",
        {"timeout", "error"},
    ),
    "unbounded_memory": ("a = []\nwhile True:\n    a.append(' ' * 10**7)", "", "", {"memory"}),
    "fill_disk": ("f = open('big', 'w')\nwhile True:\n    f.write('x' * 10**6)", "", "", {"error", "memory"}),
    "endless_print": ("while True:\n    print('spam' * 100)", "", "", {"output_limit"}),
    "network": (
        "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=1)\nprint('connected')",
        "",
        "connected",
        {"error"},
    ),
    "credentials_env": (
        "import os\nprint(sorted(k for k in os.environ if 'SECRET' in k or 'TOKEN' in k or 'KEY' in k))",
        "",
        "[]",
        {"pass"},
    ),
    "files_outside": (
        "import os\nprint([p for p in ('/work', '/root/.ssh', '/etc/passwd', '/home', '/var') if os.path.exists(p)])",
        "",
        "[]",
        {"pass"},
    ),
    "write_outside": (
        "ok = []\nfor p in ('/tmp/x', '/usr/x', '/x', '../x'):\n    try:\n        open(p, 'w').write('1')\n"
        "        ok.append(p)\n    except OSError:\n        pass\nopen('mine', 'w').write('fine')\nprint(ok)",
        "",
        "[]",
        {"pass"},
    ),
    "signal_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)", "", "", {"error"}),
    "kill_everyone": ("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('done')", "", "", {"error", "timeout", "fail"}),
    "ptrace_parent": (
        "import ctypes, os\nlibc = ctypes.CDLL(None)\nprint(libc.ptrace(16, os.getppid(), 0, 0), libc.ptrace(16, 1, 0, 0))",
        "",
        "-1 -1",
        {"pass"},
    ),
    "background_process": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\nprint('bye')",
        "",
        "bye",
        {"pass"},
    ),
    "ignore_sigterm_and_sleep": (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(1000)",
        "",
        "",
        {"timeout"},
    ),
    "ignore_cpu_signals": (
        "import signal\nfor s in (signal.SIGPROF, signal.SIGXCPU, signal.SIGTERM):\n    signal.signal(s, signal.SIG_IGN)\n"
        "while True:\n    pass",
        "",
        "",
        {"timeout"},
    ),
    "close_stdout": ("import os, sys\nos.close(1)\nsys.stdout.close()\nprint('x')", "", "x", {"error"}),
    "huge_stdin": ("import sys\nprint(len(sys.stdin.read()))", "x" * (8 << 20), str(8 << 20), {"pass"}),
    "read_real_stdin": ("print(len(open(0).read()))", "abc", "0", {"pass"}),
    "syntax_garbage": ("\x00\x01 def ((((", "", "", {"error"}),
    "deep_recursion": ("import sys\nsys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1)\nf(0)", "", "", {"error", "memory", "timeout"}),
}

AFTER = ("import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3", "6")
# Inside the sandbox only the worker (pid 1) and this program's own process may exist.
PROCS = ("import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))", "", "2")


@pytest.fixture(scope="module")
def pool():
    with no_leftover_processes():
        with SandboxPool("gvisor", workers=1, limits=Limits(memory_mb=256, output_limit=1 << 16)) as p:
            yield p


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(pool, name, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")  # must not reach the program
    code, stdin, expected, allowed = HOSTILE[name]
    jobs = [
        Job(code=code, tests=[(stdin, expected)] * 2, time_limit=LIMIT),
        Job(code=PROCS[0], tests=[(PROCS[1], PROCS[2])], time_limit=LIMIT),
        Job(code=AFTER[0], tests=[(AFTER[1], AFTER[2])], time_limit=LIMIT),
    ]
    pool.run(jobs)  # one sandbox: the jobs run in this order
    hostile, procs, after = (j.status for j in jobs)
    assert set(hostile) <= allowed, f"{name}: {hostile}"
    assert procs == ["pass"], f"{name}: processes left inside the sandbox"
    assert after == ["pass"], f"{name}: the sandbox does not serve the next job"


def test_whole_suite_leaves_no_process_on_the_host():
    codes = ["import os, time\nif os.fork() == 0:\n    time.sleep(1000)\nprint(1)", "while True:\n    pass"]
    with no_leftover_processes():
        with SandboxPool("gvisor", workers=2) as p:
            jobs = p.run([Job(code=c, tests=[("", "1")], time_limit=LIMIT) for c in codes])
    assert [j.status for j in jobs] == [["pass"], ["timeout"]]
