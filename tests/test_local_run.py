"""The training pipeline end to end through kfp.local: chained runs, --resume, and a run killed mid-round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cure.store import open_store
from cure_cli import main

# A briefly warm-started tiny model, few and short samples: a test of the pipeline's mechanics, not of learning.
FAST = ["--base-model", "tiny:0:40", "--eval-every", "2",
        "--set", "rollout.max_new_tokens=48", "--set", "data.tasks_per_step=2", "--set", "rollout.k_code=2",
        "--set", "rollout.k_test=2", "--set", "eval.k_code=2", "--set", "eval.k_test=2", "--set", "eval.scales=[[2, 2]]"]
REPO = Path(__file__).resolve().parents[1]


def _command(out: Path, *extra: str) -> list[str]:
    return ["run", "--preset", "smoke", "--rounds", "2", "--out", str(out), *FAST, *extra]


def _kill_during(args: list[str], marker: str, timeout_s: float = 1200) -> None:
    """Run ``cure ARGS`` in its own process group and SIGKILL the whole group once ``marker`` is logged."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "cure_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the run never reached " + marker
    proc.wait()
    assert any(marker in line for line in seen), "".join(seen[-40:])


@pytest.mark.slow
def test_resume_continues_and_survives_a_kill(tmp_path, capsys):
    out = tmp_path / "run"
    store = open_store(f"file://{out / 'store'}")

    assert main(_command(out)) == 0
    assert [h["round"] for h in json.loads((out / "history.json").read_text())] == [0, 2]
    assert store.latest_checkpoint("local-smoke") == "round-0002"

    # Two more rounds, killed while round 3 trains: nothing of round 3 may become `latest`.
    _kill_during([*_command(out), "--resume"], "round 3/4: train")  # the console's plain line
    assert store.latest_checkpoint("local-smoke") == "round-0002"
    manifest = store.checkpoint_manifest("local-smoke", "latest")  # complete, sha256 matches the pointer
    assert manifest["metadata"]["round"] == 2

    # The same command again continues from round 2 and ends at round 4.
    assert main([*_command(out), "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    rounds = [h["round"] for h in history]
    assert rounds == [0, 2, 4], rounds  # strictly increasing, each evaluation once
    records = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in records] == [1, 2, 3, 4]  # no round lost or repeated
    for r in records:
        assert set(r) == {"round", "rollout", "execute", "reward", "train", "seconds"}
        assert r["train"]["examples"] >= 0 and r["seconds"]["rollout"] > 0
    assert store.latest_checkpoint("local-smoke") == "round-0004"
    assert store.checkpoint_manifest("local-smoke", "latest")["metadata"]["round"] == 4
    for h in history:
        for key in ("code_acc", "unit_test_acc", "p01", "p00", "bon_2x2"):
            assert 0.0 <= h[key] <= 1.0
    assert (out / "report" / "report.html").stat().st_size > 1000
    # The total is reached: another run (through kfp.local) does nothing and succeeds.
    assert main(["run", "--preset", "smoke", "--out", str(out), "--resume", *FAST]) == 0
    assert [h["round"] for h in json.loads((out / "history.json").read_text())] == [0, 2, 4]
    assert [r["round"] for r in json.loads((out / "rounds.json").read_text())] == [1, 2, 3, 4]
    assert len(list((out / "kfp").iterdir())) == 4  # four kfp.local runs: 1-2, killed, 3-4, nothing to do
    # The orchestrator's output went to the run's log, not to the console.
    printed = capsys.readouterr().out
    assert "round" in printed
    log = (out / "run.log").read_text()
    assert "Executing task" in log and "Executing task" not in printed and str(out / "run.log") in printed


# --- presets are files ---------------------------------------------------------------------------------------------


def test_run_presets_are_the_preset_files_with_a_run_section() -> None:
    from cure_pipelines.local_run import RUN_FIELDS, run_presets

    from cure.config import read_preset

    assert run_presets() == ["demo", "smoke"]
    for name in run_presets():
        assert sorted(read_preset(name)["run"]) == sorted(RUN_FIELDS)
    assert "run" not in read_preset("long_cot") and "run" not in read_preset("cpu_tiny")
    assert read_preset("demo")["train"]["engine"] == "torch"  # from cpu_tiny, which demo extends


def test_a_run_config_layers_file_then_preset_then_runner_then_set(tmp_path: Path) -> None:
    from cure_pipelines.local_run import preset_and_config

    from cure.config import load_config

    user = tmp_path / "c.yaml"
    user.write_text("rollout:\n  k_code: 2\n  top_p: 0.5\n")
    run, cfg = preset_and_config("smoke", str(user), ["eval.k_test=5"], "docker")
    assert run["rounds"] == 1 and run["base_model"] == "tiny:0" and run["noise_seeds"] == [101]
    assert cfg.rollout.k_code == 4  # the preset's, over the file's
    assert cfg.rollout.top_p == 0.5  # the file's, where the preset sets nothing
    assert cfg.eval.k_test == 5  # --set wins
    assert cfg.rollout.engine == "hf" and cfg.execute.isolation == "gvisor"  # the base preset's
    # --config preset:NAME gives the same config sections, without the run section
    assert load_config("preset:demo") == load_config(preset="demo")
    assert load_config("preset:demo").train.learning_rate == 5e-4


def test_an_unknown_run_preset_is_refused_naming_the_choices() -> None:
    from cure_pipelines.local_run import preset_and_config

    from cure.validate import CliError

    with pytest.raises(CliError, match="unknown preset 'long_cot'; choose one of demo, smoke"):
        preset_and_config("long_cot", None, [], "subprocess")
