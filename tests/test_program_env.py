"""The program environment is the reference's: numpy, pandas and scipy importable (numpy already imported in the
process that forks programs), under gVisor through ``cure execute``; nothing else of the host's environment."""

from __future__ import annotations

import json

import pytest
from sandbox_fixtures import no_leftover_processes, rollout

import cure_cli as cli
from cure.sandbox import Job, SandboxPool, gvisor
from cure.sandbox.worker import heavy_imports

pytestmark = pytest.mark.gvisor

NUMPY = "import numpy as np\na = np.array(list(map(int, input().split())))\nprint(int(a.sum()), a.max())"
PANDAS = ("import pandas as pd\nnums = list(map(int, input().split()))\ns = pd.Series(nums)\n"
          "print(int(s.sum()), int(s.max()))")
SCIPY = ("from scipy import optimize\nimport numpy as np\nnums = list(map(int, input().split()))\n"
         "r = optimize.minimize_scalar(lambda x: (x - sum(nums)) ** 2)\nprint(round(r.x), max(nums))")


def test_correct_programs_importing_numpy_pandas_scipy_pass_in_cure_execute(tmp_path):
    gt = [("1 2 3", "6 3"), ("5 4", "9 5")]
    rec = rollout([NUMPY, PANDAS, SCIPY, "import torch\nprint(6, 3)"], gt, time_limit_s=1.0)
    src, dst = tmp_path / "rollouts.jsonl", tmp_path / "executions.jsonl"
    src.write_text(json.dumps(rec) + "\n")
    with no_leftover_processes():
        rc = cli.main(["execute", "--rollouts", str(src), "--out", str(dst), "--isolation", "gvisor", "--workers", "1",
                       "--no-progress"])
    assert rc == 0
    [out] = [json.loads(line) for line in dst.read_text().splitlines()]
    assert out["status"][:3] == [["pass", "pass"]] * 3
    assert out["status"][3] == ["error", "error"]  # the host's other packages are not there


def test_numpy_is_preloaded_and_single_threaded():
    code = ("import sys\nprint('numpy' in sys.modules, 'pandas' in sys.modules)\n"
            "import os\nprint(os.environ.get('OPENBLAS_NUM_THREADS'))")
    with SandboxPool("gvisor", workers=1) as pool:
        [job] = pool.run([Job(code=code, tests=[("", "True False None")], want_output=True)])
    # the program's environment is cleared, the worker's (one BLAS thread) is not the program's business
    assert job.status == ["pass"], job.outputs


def test_program_packages_are_the_closure_of_numpy_pandas_scipy():
    names = {p.name for p in gvisor.program_package_paths()}
    assert {"numpy", "pandas", "scipy", "dateutil"} <= names
    assert not names & {"torch", "transformers", "cure", "kfp"}


def test_heavy_imports_are_found_by_name():
    assert heavy_imports("import pandas as pd\nfrom scipy import optimize, stats\nimport numpy") == [
        "pandas", "scipy", "scipy.optimize", "scipy.stats"]
    assert heavy_imports("import math\nprint(1)") == []
    assert heavy_imports("def broken(:") == []


def test_isolation_none_offers_the_same_packages(caplog):
    """Without gVisor (a sandbox pod or container, where the pod is the sandbox), the worker finds the same packages
    through a folder of links, and only those."""
    from cure.config import ExecuteConfig
    from cure.execute import execute_rollouts

    # (Importing pandas is not run here: on this machine the host's Python lives where the unprivileged program
    # user cannot read the standard library modules pandas needs; pods and containers have it under /usr. For the
    # same reason the program looks for the folder of links without following them: a checkout under a folder only
    # root may enter, as a fresh clone in `mktemp -d` is, hides the links' targets from it.)
    found = ("import os, sys\nlib = [p for p in sys.path if os.path.lexists(os.path.join(p, 'pandas'))]\n"
             "print(len(lib), sorted(os.listdir(lib[0])) if lib else None)")
    names = sorted(p.name for p in gvisor.program_package_paths())
    rec = rollout([NUMPY, found, "import torch\nprint(6, 3)"], [("1 2 3", "6 3")], time_limit_s=1.0)
    rec["tests"] = [{"input": "", "output": f"1 {names}"}]
    with no_leftover_processes():
        [out] = execute_rollouts([rec], ExecuteConfig(isolation="none", workers=1), progress=False)
    assert out["status"] == [["pass", "error"], ["fail", "pass"], ["error", "error"]]
