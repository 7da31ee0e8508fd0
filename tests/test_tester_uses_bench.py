"""``bench/tester_uses.py`` (the README's tester-use tables from a finished demo run) and
``cure run --pipeline evaluation``: reading the run folder, the statistics and the tables, on handmade files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import tester_uses as tu


def _demo_folder(tmp_path: Path, rounds: int = 12) -> Path:
    from cure.config import CureConfig
    from cure.store import open_store

    run = tmp_path / "demo"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"preset": "demo", "experiment": "local-demo", "total_rounds": rounds}))
    (run / "config.json").write_text(json.dumps(CureConfig().model_dump(mode="json")))
    h0 = {"round": 0, "seeds": [101, 102, 103], "primary_benchmark": "synthetic_heldout",
          "benchmarks": {"synthetic_heldout": {"code_acc": 0.5}},
          "repeats": {"synthetic_heldout": [{"code_acc": x} for x in (0.5, 0.6, 0.4)]}}
    (run / "history.json").write_text(json.dumps([h0]))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    store = open_store(f"file://{run / 'store'}")
    store.commit_checkpoint("local-demo", "round-0006", ckpt, metadata={"round": 6})
    store.commit_checkpoint("local-demo", f"round-{rounds:04d}", ckpt, metadata={"round": rounds})
    return run


def test_read_demo_takes_the_latest_checkpoint_and_the_round0_seeds(tmp_path: Path):
    demo = tu.read_demo(_demo_folder(tmp_path))
    assert demo["latest"] == "round-0012" and demo["round"] == 12 and demo["preset"] == "demo"
    h0 = tu.history_entry(demo["history"], 0)
    assert [r["code_acc"] for r in tu.benchmark_runs(h0, "synthetic_heldout")] == [0.5, 0.6, 0.4]


def test_read_demo_names_what_a_folder_lacks(tmp_path: Path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(SystemExit, match="no config.json, history.json, store"):
        tu.read_demo(tmp_path)


def test_noise_is_the_seed_sd_and_a_gain_carries_the_se_of_a_difference():
    a, b = tu.mean_sd([0.5, 0.6, 0.4]), tu.mean_sd([0.7, 0.8, 0.9])
    assert a["mean"] == pytest.approx(0.5) and a["sd"] == pytest.approx(0.1)
    g = tu.gain(a, b)
    assert g["gain"] == pytest.approx(0.3) and g["se"] == pytest.approx(math.sqrt(2 * 0.01 / 3))


def _results() -> dict:
    scales = [{"programs": 4, "tests": 4, "bon_paired": 0.5, "bon_own": 0.25, "gain": 0.25}]
    tokens = {"coder_programs": 100, "coder_tests": 80, "tester_tests": 90, "coder_prompts": 10, "test_prompts": 12}
    pair_run = {"code_acc": 0.4, "scales": scales, "tester_unit_test_acc": 0.2, "coder_unit_test_acc": 0.1,
                "tokens": tokens}
    row = {"round": 0, "code_acc": 0.5, "bon_4x4": 0.5, "unit_test_acc": 0.1, "programs_refined": 0, "tests_regenerated": 0}
    return {
        "setting": {"demo_run": "runs/demo", "preset": "demo", "round": 12, "tasks_per_step": 32, "base": "b",
                    "latest": "round-0012", "heldout": "synthetic:heldout:64:1", "seeds": [1, 2, 3],
                    "scales": [[4, 4]], "refine_rounds": 1},
        "eval": {"round0": [{"code_acc": x, "unit_test_acc": 0.1, "bon_4x4": 0.5} for x in (0.5, 0.6, 0.4)],
                 "ground_truth": [{"code_acc": x, "unit_test_acc": 0.2, "bon_4x4": 0.7} for x in (0.8, 0.8, 0.8)],
                 "label_free": [{"code_acc": x, "unit_test_acc": 0.1, "bon_4x4": 0.5} for x in (0.6, 0.6, 0.6)]},
        "pairing": {"round 0": {"benchmarks": {"synthetic_heldout": [pair_run, pair_run]}, "pipeline_seconds": 9}},
        "refine": {"round 12": {"seeds": [[row, dict(row, round=1, code_acc=0.6, programs_refined=5, code_prompts=8,
                                                     test_prompts=3)]] * 2,
                                "pipeline_seconds": 9}},
    }


def test_tables_show_each_use_with_its_noise():
    md = tu.render(_results())
    assert "| ground-truth RL, round 12 (the demo) | 0.800 ± 0.000 | 0.200 ± 0.000 | 0.700 ± 0.000 | +0.300 ± 0.058 |" in md
    assert "| label-free RL, round 12 | 0.600 ± 0.000 |" in md and "+0.100 ± 0.058" in md
    assert "| round 0 | 4 x 4 | 0.400 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 | +0.250 ± 0.000 |" in md
    assert "| round 0 | 0.200 ± 0.000 | 0.100 ± 0.000 | 100 | 80 | 90 | 10 / 12 |" in md
    assert "| 0 (one-shot) | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.100 ± 0.000 | 0 / 0 | 0 / 0 |" in md
    assert "| 1 | 0.600 ± 0.000 |" in md and "| 5 / 8 | 0 / 3 |" in md
    assert "|---|---|---|---|---|---|\n| 0 (one-shot)" in md  # one separator cell per column
    # BoN minus one-shot per seed: round 0 gives 0.0, -0.1, +0.1 (SD 0.1, SE 0.058); the demo -0.1 each
    assert "| round 0 | +0.000 (0.100; 0.058) |" in md and "| ground-truth RL, round 12 (the demo) | -0.100 (0.000; 0.000) |" in md


def test_cure_run_takes_the_evaluation_pipeline_flags():
    import argparse

    from cure_cli.run import configure as configure_parser

    p = argparse.ArgumentParser()
    configure_parser(p)
    args = p.parse_args(["--pipeline", "evaluation", "--coder-model", "coder", "--coder-engine", "hf", "--seeds", "1", "2"])
    assert (args.pipeline, args.coder_model, args.coder_engine, args.seeds) == ("evaluation", "coder", "hf", [1, 2])
    assert p.parse_args([]).pipeline == "training"


def test_local_evaluation_collects_history_refinement_and_pairing(tmp_path: Path):
    from cure_pipelines.local_eval import collect_outputs

    h = tmp_path / "store" / "local-smoke-evaluation" / "runs" / "job-1" / "history.json"
    h.parent.mkdir(parents=True)
    metrics = {"code_acc": 0.5, "refine0_code_acc": 0.5, "refine0_unit_test_acc": 0.1, "refine0_bon_4x4": 0.5,
               "refine0_programs_refined": 0, "refine0_tests_regenerated": 0, "refine1_code_acc": 0.75,
               "refine1_unit_test_acc": 0.2, "refine1_bon_4x4": 0.5, "refine1_programs_refined": 3,
               "refine1_tests_regenerated": 1}
    h.write_text(json.dumps([{"round": 0, "seeds": [101], "primary_benchmark": "b", "benchmarks": {"b": metrics}}]))
    pm = tmp_path / "kfp" / "cure-x" / "evaluate-pairing" / "pairing" / "pairing.md"
    pm.parent.mkdir(parents=True)
    pm.write_text("pairing table\n")
    files = collect_outputs(tmp_path)
    assert [f.name for f in files] == ["history.json", "refine.md", "pairing.md"]
    assert "| 1 | 0.750 | 0.500 | 0.200 | 3 | 1 |" in (tmp_path / "refine.md").read_text()


def test_seeds_the_run_already_evaluated_are_reused_not_evaluated_again():
    entry = {"seeds": [101], "benchmarks": {"b": {"code_acc": 0.8}}}
    known = tu.seed_runs(entry, "b")
    assert known == {101: {"code_acc": 0.8}} and tu.seed_runs(entry, "other") == {}
    runs, here = tu.evaluate_seeds("no-model", "no-tasks", None, [101], 12, known)  # nothing left to evaluate
    assert runs == [{"code_acc": 0.8}] and here == []


def test_refinement_rows_come_from_the_evaluation_pipelines_history(tmp_path: Path, monkeypatch):
    """The refine part reads each seed's rows from the pipeline run's history (its ``repeats``)."""
    def metrics(acc):
        return {"code_acc": 0.5, "refine0_code_acc": 0.5, "refine0_unit_test_acc": 0.1, "refine0_bon_4x4": 0.5,
                "refine0_programs_refined": 0, "refine0_tests_regenerated": 0, "refine1_code_acc": acc,
                "refine1_unit_test_acc": 0.2, "refine1_bon_4x4": 0.5, "refine1_programs_refined": 3,
                "refine1_tests_regenerated": 1}
    entry = {"round": 0, "seeds": [7, 8], "primary_benchmark": "synthetic_heldout",
             "benchmarks": {"synthetic_heldout": metrics(0.75)},
             "repeats": {"synthetic_heldout": [metrics(0.75), metrics(0.25)]}}
    calls = []

    def fake_eval_pipeline(demo, model, out, overrides, seeds, coder_model="", coder_engine="openai"):
        calls.append((model, overrides, seeds))
        return {"seconds": 3, "result": [entry]}

    monkeypatch.setattr(tu, "eval_pipeline", fake_eval_pipeline)
    got = tu.refinement({}, "m", 1, [8, 7], tmp_path, ["x.y=1"])
    assert calls == [("m", ["eval.refine_rounds=1", "x.y=1"], [8, 7])]
    assert [seed[1]["code_acc"] for seed in got["seeds"]] == [0.25, 0.75]  # in the order of the seeds asked
    assert got["seeds"][0][1]["programs_refined"] == 3 and got["pipeline_seconds"] == 3
