"""``cure.quick_exit``: a succeeded task skips the interpreter's teardown; a failure keeps its status and teardown.

Each case runs a small script as ``__main__`` under a file named like KFP's executor. A hook registered before
``arm()`` stands for the teardown (torch's and logging's exit hooks run then): it prints ``teardown``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HEAD = """
import atexit, logging, sys
atexit.register(lambda: print("teardown", flush=True))
logging.basicConfig(level=logging.INFO, format="%(message)s")
from cure.quick_exit import arm
"""


def run(tmp_path: Path, body: str, main_name: str = "kfp/dsl/executor_main.py", env: dict | None = None):
    script = tmp_path / main_name
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(HEAD + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)


def test_success_skips_the_teardown_and_keeps_the_output(tmp_path):
    r = run(tmp_path, """
        print("armed", arm())
        sys.stdout.write("unflushed tail")  # buffered: the hook must flush it
        logging.getLogger("x").info("logged after arm")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "armed True\nunflushed tail"  # no "teardown": the earlier exit hook was skipped
    assert "logged after arm" in r.stderr


def test_an_exception_after_arm_keeps_status_1_and_the_teardown(tmp_path):
    r = run(tmp_path, """
        arm()
        raise RuntimeError("writing the outputs failed")
    """)
    assert r.returncode == 1
    assert "teardown" in r.stdout and "writing the outputs failed" in r.stderr


def test_a_living_child_keeps_the_normal_exit(tmp_path):
    r = run(tmp_path, """
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        arm()
        atexit.register(child.kill)  # runs before the quick-exit hook: LIFO (the child is killed, not yet reaped)
    """)
    assert r.returncode == 0 and "teardown" in r.stdout


def test_not_armed_outside_the_executor_nor_when_disabled(tmp_path):
    r = run(tmp_path, 'print("armed", arm())', main_name="other_main.py")
    assert r.returncode == 0 and r.stdout == "armed False\nteardown\n"
    r = run(tmp_path, 'print("armed", arm())', env={"CURE_QUICK_EXIT": "0"})
    assert r.returncode == 0 and r.stdout == "armed False\nteardown\n"


def test_on_success_arms_only_when_the_step_returns(tmp_path):
    r = run(tmp_path, """
        import cure.quick_exit as q

        @q.on_success
        def step(fail):
            if fail:
                raise ValueError("step failed")
            return {"ok": 1}

        try:
            step(True)
        except ValueError:
            print("armed after a failed step", q._armed)
        print(step(False), "armed", q._armed)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "armed after a failed step False\n{'ok': 1} armed True\n"  # then no teardown
