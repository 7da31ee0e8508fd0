"""A gVisor sandbox whose `runsc run` dies before the sandbox is up is started again (a transient failure of a busy
host), and a runsc that never starts still gives the clear error, after a bounded number of tries."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from cure.sandbox import Job, Limits, SandboxPool

pytestmark = pytest.mark.gvisor

FAILURE = "creating container: cannot create sandbox: cannot read client sync file: waiting for sandbox to start: EOF"


def _flaky_runsc(folder: Path, failures: int) -> Path:
    """A `runsc` on PATH whose first ``failures`` `run` calls die as the real one sometimes does; then the real one."""
    real = shutil.which("runsc")
    assert real, "runsc not installed"
    count = folder / "runs"
    count.write_text("0")
    script = folder / "runsc"
    script.write_text(
        "#!/bin/bash\n"
        'for a in "$@"; do if [ "$a" = run ]; then\n'
        f'  n=$(cat {count}); echo $((n+1)) > {count}\n'
        f'  if [ "$n" -lt {failures} ]; then echo "{FAILURE}" >&2; exit 128; fi\n'
        "fi; done\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return count


def test_a_start_that_dies_is_retried(tmp_path, monkeypatch, caplog):
    count = _flaky_runsc(tmp_path, failures=2)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with SandboxPool("gvisor", workers=1, limits=Limits(memory_mb=512)) as pool:
        job = Job(code="print(int(input()) * 2)", tests=[("21", "42")], time_limit=1.0)
        pool.run([job])
    assert job.status == ["pass"]
    assert count.read_text().strip() == "3"
    assert "retrying (1/2)" in caplog.text


def test_a_runsc_that_never_starts_fails_clearly(tmp_path, monkeypatch):
    count = _flaky_runsc(tmp_path, failures=99)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="did not start: .*cannot read client sync file"):
        with SandboxPool("gvisor", workers=1, limits=Limits(memory_mb=512)) as pool:
            pool.run([Job(code="print(1)", tests=[("", "1")], time_limit=1.0)])
    assert count.read_text().strip() == "3"
