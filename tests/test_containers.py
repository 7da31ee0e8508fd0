"""The images, run for real on a local engine (opt-in: `make test-containers`, which builds what is missing).

- The sandbox image runs exactly as the cluster Job runs its pods (:func:`cure.sandbox.container.container_spec`
  translates the pod spec of :func:`cure.sandbox.k8s.build_job`: runsc, the worker as root inside gVisor with six
  capabilities, read-only root, no network, /shard read-only, /tmp a tmpfs like the Job's memory emptyDir, the
  shard entrypoint) and contains every program of the adversarial suite (tests/test_sandbox_adversarial.py).
- `cure run --preset smoke --runner docker` runs every component in its image and gives the subprocess runner's
  results for the same seeds.

Needs root, podman with the runsc runtime (scripts/container-engine.sh), the API socket (DOCKER_HOST) and the
images of `make images-local`; CURE_TEST_CONTAINERS=1 turns these tests on.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_sandbox_adversarial import AFTER, HOSTILE, LIMIT, PROCS

pytestmark = [
    pytest.mark.containers,
    pytest.mark.skipif(os.environ.get("CURE_TEST_CONTAINERS") != "1", reason="opt-in: make test-containers"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    """The engine that runs sandbox containers (podman's runsc socket), holding the sandbox image of this code."""
    from cure.images import image_for
    from cure.sandbox.container import sandbox_client

    c = sandbox_client()
    assert c.images.list(name=image_for("sandbox")), f"build the images first (make images-local): {image_for('sandbox')}"
    return c


def _record(task_id: str, code: str, tests: list[tuple[str, str]]) -> dict:
    return {"task_id": task_id, "codes": [code], "gt_tests": [{"input": i, "output": o} for i, o in tests],
            "tests": [], "time_limit_s": LIMIT}


def _run(client, records: list[dict], memory_mb: int = 256) -> list[list[str]]:
    from cure.sandbox.container import run_shards

    # the adversarial suite's limits; one worker, so the jobs of a shard run in order in one sandbox
    out = run_shards(records, shards=1, client=client, workers=1, memory_mb=memory_mb, output_limit=1 << 16,
                     timeout_s=300)
    return [rec["status"][0] for rec in out]


PROBE = (
    "import os\n"
    "print(os.getuid(), os.getgid(), os.uname().release)\n"
    "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    "for p in ('/shard/x', '/x', '/usr/x', '/tmp/x'):\n"
    "    try:\n"
    "        open(p, 'w')\n"
    "        print('writable', p)\n"
    "    except OSError:\n"
    "        pass\n"
    "open('mine', 'w').write('ok')\n"
    "print(sorted(k for k in os.environ if k.startswith(('AWS', 'DOCKER', 'KUBERNETES', 'CURE_SANDBOX_SHARED'))))\n"
)


def test_sandbox_container_is_confined(client, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    # the program's uid (nobody: the root worker hands it out), gVisor's kernel (4.4.0), no effective
    # capabilities, read-only root, /shard and /tmp, a writable working folder, no credentials or engine address
    expected = "65534 65534 4.4.0\n0000000000000000\n[]"
    assert _run(client, [_record("probe", PROBE, [("", expected)])]) == [["pass"]]


def test_programs_import_numpy_pandas_scipy_in_the_sandbox_image(client) -> None:
    """As in the reference's environment: a correct program importing numpy, pandas or scipy passes in the sandbox
    image under the cluster Job's spec, within the adversarial suite's CPU limit (0.5 s) and the default memory
    limit (execute.memory_mb, 1024 MB: scipy.optimize's import alone does not fit the suite's 256 MB); other
    packages are not there."""
    from test_program_env import NUMPY, PANDAS, SCIPY

    from cure.config import ExecuteConfig

    gt = [("1 2 3", "6 3"), ("5 4", "9 5")]
    records = [_record(name, code, gt) for name, code in
               (("numpy", NUMPY), ("pandas", PANDAS), ("scipy", SCIPY), ("torch", "import torch\nprint(6, 3)"))]
    assert _run(client, records, memory_mb=ExecuteConfig().memory_mb) == [["pass", "pass"]] * 3 + [["error", "error"]]


# The image has its own /etc, /home and /var (the single-machine sandbox's root is empty): what must stay invisible
# is the host's.
CONTAINER_HOSTILE = dict(HOSTILE)
CONTAINER_HOSTILE["files_outside"] = (
    "import os\nprint([p for p in ('/work', '/root/.ssh', '/root/.cache', '/opt/wheels', '/run/podman', '/var/lib/containers')"
    " if os.path.exists(p)])",
    "",
    "[]",
    {"pass"},
)


def _baseline_procs(client) -> str:
    """How many processes a clean sandbox container shows to a program (the shard entrypoint, its worker, the program)."""
    counts = [str(n) for n in range(1, 8)]
    status = _run(client, [_record("procs", PROCS[0], [("", c) for c in counts])])[0]
    assert status.count("pass") == 1, status
    return counts[status.index("pass")]


def _suite(client) -> dict[str, list[list[str]] | str]:
    procs = _baseline_procs(client)

    def one(name: str) -> list[list[str]] | str:
        code, stdin, expected, _ = CONTAINER_HOSTILE[name]
        try:
            return _run(client, [
                _record(name, code, [(stdin, expected)] * 2),
                _record("procs", PROCS[0], [("", procs)]),
                _record("after", AFTER[0], [(AFTER[1], AFTER[2])]),
            ])
        except RuntimeError as e:  # the shard container itself failed
            return str(e)

    os.environ["AWS_SECRET_ACCESS_KEY"] = "do-not-leak"  # must not reach any program
    try:
        with ThreadPoolExecutor(2) as pool:
            return dict(zip(CONTAINER_HOSTILE, pool.map(one, CONTAINER_HOSTILE)))
    finally:
        del os.environ["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def suite(client) -> dict[str, list[list[str]] | str]:
    return _suite(client)


@pytest.mark.parametrize("name", list(CONTAINER_HOSTILE))
def test_adversarial_program_is_contained_under_the_cluster_job_spec(suite, name) -> None:
    result = suite[name]
    assert not isinstance(result, str), f"{name}: {result}"
    hostile, procs, after = result
    assert set(hostile) <= CONTAINER_HOSTILE[name][3], f"{name}: {hostile}"
    assert procs == ["pass"], f"{name}: processes left inside the sandbox container"
    assert after == ["pass"], f"{name}: the sandbox container does not serve the next job"


def test_no_sandbox_container_is_left_behind(suite, client) -> None:
    from cure.sandbox.container import LABEL

    left = subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"label={LABEL}"], capture_output=True, text=True, check=True)
    assert left.stdout.strip() == ""


def test_every_image_carries_its_own_tag() -> None:
    """The execute launcher starts the sandbox image named by its own image's CURE_IMAGE_TAG: a stale one (podman's
    layer cache once reused an older image's ENV layer) would run an older sandbox."""
    from cure.container_runner import engine_client
    from cure.images import FAMILIES, image_for

    client = engine_client()
    for family in FAMILIES:
        image = image_for(family)
        env = dict(e.split("=", 1) for e in client.images.get(image).attrs["Config"]["Env"])
        assert f"{env.get('CURE_IMAGE_REGISTRY')}/cure-{family}:{env.get('CURE_IMAGE_TAG')}" == image, (image, env)


# --- the smoke pipeline, each component in its image -------------------------------------------------------------


def _comparable(history: list[dict]) -> list[dict]:
    """History without wall-clock figures (the only fields allowed to differ between runners)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k and not k.endswith("_s") and k not in ("time", "timestamp", "run_name", "tokens_per_s")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(history)


def test_smoke_in_containers_matches_the_subprocess_runner(tmp_path) -> None:
    from cure_pipelines.local_run import run_local

    from cure.container_runner import engine_client, missing_images

    missing = missing_images(engine_client())
    assert not missing, f"build the images first (make images-local): {missing}"

    # a 40-step tiny model (about a minute to build) unless told otherwise: the pipeline is the same as with tiny:0
    base = os.environ.get("CURE_TEST_SMOKE_BASE_MODEL", "tiny:0:40")
    docker = run_local("smoke", tmp_path / "docker", runner="docker", base_model=base)
    plain = run_local("smoke", tmp_path / "subprocess", runner="subprocess", base_model=base)
    assert (tmp_path / "docker" / "report" / "report.html").is_file()
    assert _comparable(docker["history"]) == _comparable(plain["history"]), json.dumps(
        {"docker": docker["history"], "subprocess": plain["history"]}, indent=1)


def test_smoke_in_containers_resumes_from_the_store(tmp_path) -> None:
    """`cure run --runner docker --resume` continues the experiment kept in the run folder: the second run starts
    from the first one's checkpoint in the store (global round 2), on a fresh workspace, from the experiment's own
    base model (no --base-model given)."""
    from cure.container_runner import engine_client, missing_images
    from cure.store import open_store
    from cure_cli import main

    missing = missing_images(engine_client())
    assert not missing, f"build the images first (make images-local): {missing}"
    base = os.environ.get("CURE_TEST_SMOKE_BASE_MODEL", "tiny:0:40")
    out = tmp_path / "run"
    store = open_store(f"file://{out / 'store'}")
    assert main(["run", "--preset", "smoke", "--runner", "docker", "--out", str(out), "--base-model", base]) == 0
    assert store.latest_checkpoint("local-smoke") == "round-0001"

    assert main(["run", "--preset", "smoke", "--runner", "docker", "--out", str(out), "--resume", "--rounds", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["base_model"] == base
    assert [h["round"] for h in json.loads((out / "history.json").read_text())] == [0, 1, 2]
    assert [r["round"] for r in json.loads((out / "rounds.json").read_text())] == [1, 2]  # none lost or repeated
    assert store.latest_checkpoint("local-smoke") == "round-0002"
    assert store.checkpoint_manifest("local-smoke", "latest")["metadata"]["round"] == 2
    assert "continuing experiment local-smoke from round-0001 (round 1)" in (out / "run.log").read_text()
    assert not (out / "workspace").exists()  # each run's workspace goes with it
