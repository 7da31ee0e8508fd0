"""The training pipeline end to end through kfp.local: one round, few tasks, gVisor sandbox on."""

from __future__ import annotations

import json

from cure.cli import main


def test_one_round_local_pipeline(tmp_path, capsys):
    out = tmp_path / "run"
    # A briefly warm-started tiny model keeps this a test of the pipeline's mechanics, not of learning.
    rc = main(["run", "--preset", "smoke", "--out", str(out), "--base-model", "tiny:0:40"])
    assert rc == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    for h in history:
        for key in ("code_acc", "unit_test_acc", "p01", "p00", "bon_4x4", "code_acc_accumulate"):
            assert 0.0 <= h[key] <= 1.0
        assert h["benchmarks"]["synthetic_heldout"]["num_tasks"] == 8
    assert (out / "report" / "report.html").stat().st_size > 1000
    # the checkpoint of the last round was promoted and the latest pointer moved
    store = out / "store" / "local-smoke"
    assert (store / "latest").exists() or any(p.name.startswith("latest") for p in store.iterdir())
    printed = capsys.readouterr().out
    assert "round" in printed and "code_acc" in printed
    # The orchestrator's output went to the run's log, not to the console.
    log = (out / "run.log").read_text()
    assert "Executing task" in log and "Executing task" not in printed and str(out / "run.log") in printed
