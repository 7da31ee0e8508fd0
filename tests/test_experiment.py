"""An experiment's state across runs (cure.experiment) and the round slots' guards (cure.segment), without KFP."""

from __future__ import annotations

import json

import pytest

from cure import experiment as exp
from cure import segment as loop
from cure.config import CureConfig
from cure.stages import shard_seed, shard_slice
from cure.store import StoreError, open_store


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path / 'store'}")


def _model(tmp_path, text: str):
    d = tmp_path / f"model-{text}"
    d.mkdir(exist_ok=True)
    (d / "weights.bin").write_text(text)
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "optimizer.pt").write_text("adam " + text)
    return d


def test_plan_continues_from_latest_and_stops_at_the_total(store, tmp_path):
    p = exp.plan_run(store, "e", total_rounds=25, segment=10)
    assert (p["start"], p["last"], p["active"], p["fresh"]) == (1, 10, True, True)
    exp.promote(store, "e", _model(tmp_path, "10"), 10, keep=False)
    p = exp.plan_run(store, "e", 25, 10)
    assert (p["start"], p["last"], p["checkpoint"]) == (11, 20, "round-0010")
    exp.promote(store, "e", _model(tmp_path, "20"), 20, keep=True)
    assert exp.plan_run(store, "e", 25, 10)["last"] == 25
    exp.promote(store, "e", _model(tmp_path, "25"), 25, keep=True)
    p = exp.plan_run(store, "e", 25, 10)
    assert p["active"] is False and p["start"] == 26  # a run after the total does nothing


def test_records_after_latest_are_dropped_when_a_run_starts(store, tmp_path):
    exp.promote(store, "e", _model(tmp_path, "2"), 2, keep=True)
    for r in (1, 2, 3):  # round 3 trained, but its run died before promoting it
        exp.upsert_record(store, "e", exp.ROUNDS, {"round": r})
    exp.upsert_record(store, "e", exp.HISTORY, {"round": 0})
    exp.upsert_record(store, "e", exp.HISTORY, {"round": 3})
    exp.plan_run(store, "e", 10, 5)
    assert [r["round"] for r in exp.read_rounds(store, "e")] == [1, 2]
    assert [r["round"] for r in exp.read_history(store, "e")] == [0]
    exp.upsert_record(store, "e", exp.ROUNDS, {"round": 3, "x": 1})
    exp.upsert_record(store, "e", exp.ROUNDS, {"round": 3, "x": 2})  # a retried task replaces its record
    assert exp.read_rounds(store, "e")[-1] == {"round": 3, "x": 2}


def test_promote_again_is_not_an_error_and_latest_never_moves_back(store, tmp_path):
    m = _model(tmp_path, "4")
    key = exp.promote(store, "e", m, 4, keep=True)
    assert exp.promote(store, "e", m, 4, keep=True) == key  # a retried promote task
    assert store.latest_checkpoint("e") == "round-0004"
    assert store.checkpoint_manifest("e", "latest")["metadata"] == {"round": 4, "keep": True}
    with pytest.raises(StoreError, match="max concurrency 1"):
        exp.promote(store, "e", _model(tmp_path, "3"), 3, keep=True)


def test_a_retry_after_an_interrupted_upload_completes_the_checkpoint(store, tmp_path):
    exp.promote(store, "e", _model(tmp_path, "1"), 1, keep=True)
    m = _model(tmp_path, "2")
    prefix = store.checkpoint_key("e", "round-0002")
    store.put_file(f"{prefix}/weights.bin", m / "weights.bin")  # the first attempt died mid-upload
    assert store.latest_checkpoint("e") == "round-0001"  # latest never names the incomplete checkpoint
    exp.promote(store, "e", m, 2, keep=True)
    assert store.latest_checkpoint("e") == "round-0002"
    assert sorted(store.checkpoint_manifest("e", "latest")["files"]) == ["sub/optimizer.pt", "weights.bin"]


def test_segment_end_checkpoints_are_pruned_save_points_kept(store, tmp_path):
    exp.promote(store, "e", _model(tmp_path, "10"), 10, keep=False)
    exp.promote(store, "e", _model(tmp_path, "20"), 20, keep=False)
    exp.promote(store, "e", _model(tmp_path, "40"), 40, keep=True)
    exp.promote(store, "e", _model(tmp_path, "50"), 50, keep=False)
    assert store.list_checkpoints("e") == ["round-0040", "round-0050"]
    assert exp.latest_round(store, "e") == ("round-0050", 50)


def test_a_folder_store_inside_a_pod_is_refused(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(StoreError, match="s3://cure"):
        exp.check_store_uri("file://./runs")
    exp.check_store_uri("s3://cure")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    exp.check_store_uri("file://./runs")


def _plan(tmp_path, total: int, segment: int, run_id: str = "run-a", **overrides):
    values = {"pipeline": {"store_uri": f"file://{tmp_path / 'store'}", "experiment": "e", **overrides}}
    config, plan, active = loop.plan(values, total, segment, run_id=run_id)
    return config, plan, active


def test_slots_map_to_global_rounds_and_intervals_count_global_rounds(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    exp.promote(store, "e", _model(tmp_path, "8"), 8, keep=False)
    config, plan, active = _plan(tmp_path, 13, 4, eval_every=5, save_every=6)
    p = json.loads(plan)
    assert active and (p["start"], p["last"]) == (9, 12)
    assert [loop.slot_round(p, k) for k in range(1, 6)] == [9, 10, 11, 12, None]
    cfg = loop.load_config(config)
    assert cfg.pipeline.rounds == 13 and cfg.pipeline.eval_every == 5
    assert [loop._eval_round(p, cfg, k) for k in range(0, 5)] == [None, None, 10, None, None]
    # promote: save point 12 (keep) and the segment's end 12; round 10 is neither
    assert loop.promote(config, plan, 2, str(tmp_path / "ws")) == {}
    _, plan13, _ = _plan(tmp_path, 13, 10)
    assert loop._eval_round(json.loads(plan13), cfg, 5) == 13  # the last round is always evaluated
    # a slot past the segment does nothing, and writes empty outputs where the component has some
    out = tmp_path / "o"
    out.mkdir()
    assert loop.execute(config, plan, 5, 1, str(tmp_path / "ws"), str(out / "r"), str(out / "x")) == {}
    assert (out / "r").read_text() == (out / "x").read_text() == ""
    assert loop.reward(config, plan, 5, str(tmp_path / "ws"), str(out / "r"), str(out / "x"), str(out / "w")) == {}
    assert (out / "w").read_text() == ""


def test_config_is_assembled_once_from_the_named_parameters(tmp_path):
    config, _, _ = _plan(tmp_path, 3, 2)
    cfg = loop.load_config(config)
    assert cfg.rollout.stop == CureConfig().rollout.stop  # typed JSON: "User:" stays a string
    assert cfg.pipeline.experiment == "e"


def test_rollout_shards_cover_the_tasks_in_order_with_distinct_seeds():
    for n in (0, 1, 7, 100):
        for shards in (1, 3, 4):
            parts = [list(range(n))[shard_slice(n, i, shards)] for i in range(shards)]
            assert sum(parts, []) == list(range(n))
    assert shard_seed(5000, 0) == 5000  # one shard samples exactly as unsharded
    assert len({shard_seed(5000, i) for i in range(8)}) == 8


def test_round_record_and_flat_metrics(tmp_path):
    ws = str(tmp_path)
    for stage, secs in (("rollout", 2.0), ("execute", 1.0), ("reward", 0.1), ("train", 4.0)):
        loop._stage_metrics(ws, 7, stage, {"n": 1.0, "tokens": 800.0} if stage == "train" else {"n": 1.0}, secs)
    rec = loop.round_record(ws, 7)
    assert set(rec) == {"round", "rollout", "execute", "reward", "train", "seconds"}
    assert rec["seconds"] == {"rollout": 2.0, "execute": 1.0, "reward": 0.1, "train": 4.0}
    flat = loop.flat_round_metrics(rec)
    assert flat["train_tokens_per_s"] == 200.0 and flat["seconds_rollout"] == 2.0 and flat["reward_n"] == 1.0


def test_markdown_report_images_are_embedded(tmp_path):
    (tmp_path / "metrics.png").write_bytes(b"\x89PNG fake")
    md = loop.embed_images("# r\n![all metrics](metrics.png)\n![missing](gone.png)\n", tmp_path)
    assert "data:image/png;base64," in md and "(gone.png)" in md


def test_raw_reward_means():
    # 2 programs x (2 ground-truth tests + 1 generated test): program 0 correct, program 1 wrong
    rec = {"num_gt": 2, "passed": [[True, True, True], [False, True, False]]}
    m = loop.raw_reward_means([rec, {"num_gt": 0, "passed": []}])
    assert m["coder_reward_mean"] == 0.75  # pass rates 1.0 and 0.5
    assert m["tester_reward_mean"] > 0  # the test passes the correct program and rejects the wrong one
