"""Training never publishes a non-finite model: huge rewards are rejected or clipped (counted), a non-finite
gradient norm stops the step or skips the update (``train.nonfinite``), and no checkpoint is written with it."""

from __future__ import annotations

import math

import pytest
import torch
from train_fixtures import load_weights, make_records, small_train_config, tiny_model  # noqa: F401

from cure.train import checkpoint as ckpt
from cure.train.stage import NonFiniteError, train_step
from cure.validate import ArtifactError


def _huge(records: list[dict], value: float) -> list[dict]:
    return [dict(r, reward=value if i % 2 else -value) for i, r in enumerate(records)]


def test_huge_rewards_are_rejected_before_training(tiny_model, tmp_path):  # noqa: F811
    with pytest.raises(ArtifactError, match=r"record 0: field 'reward': -1e\+300 is outside \[-10, 10\]"):
        train_step(str(tiny_model), _huge(make_records(4), 1e300), small_train_config(), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_clipped_rewards_are_counted(tiny_model, tmp_path):  # noqa: F811
    cfg = small_train_config(reward_out_of_range="clip", max_abs_reward=3.0)
    m = train_step(str(tiny_model), _huge(make_records(4), 1e300), cfg, str(tmp_path / "out"))
    assert m["rewards_clipped"] == 4 and m["nonfinite_updates"] == 0
    assert all(torch.isfinite(w).all() for w in load_weights(m["checkpoint"]).values())


def test_infinite_gradient_norm_stops_without_a_checkpoint(tiny_model, tmp_path):  # noqa: F811
    cfg = small_train_config(max_abs_reward=1e30)  # let the 1e20 rewards of the report through to the engine
    with pytest.raises(NonFiniteError, match="non-finite .*no checkpoint was written"):
        train_step(str(tiny_model), _huge(make_records(4), 1e20), cfg, str(tmp_path / "out"))
    assert ckpt.latest_checkpoint(tmp_path / "out") is None


def test_infinite_gradient_norm_skips_the_update_when_asked(tiny_model, tmp_path):  # noqa: F811
    cfg = small_train_config(max_abs_reward=1e30, nonfinite="skip")
    m = train_step(str(tiny_model), _huge(make_records(4), 1e20), cfg, str(tmp_path / "out"))
    assert m["nonfinite_updates"] == m["updates"] == m["skipped_updates"] > 0
    assert not math.isfinite(m["per_update"][0]["grad_norm"])
    before, after = load_weights(tiny_model), load_weights(m["checkpoint"])
    assert all(torch.equal(before[k], after[k]) for k in before)  # skipped: the model is unchanged, and finite


def test_an_existing_step_is_replaced_only_when_asked(tiny_model, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    first = train_step(str(tiny_model), make_records(4), small_train_config(), str(out))
    with pytest.raises(ckpt.StepExists, match="--overwrite"):  # raised before any training
        train_step(str(tiny_model), make_records(4, seed=1), small_train_config(), str(out))
    again = train_step(str(tiny_model), make_records(4, seed=1), small_train_config(), str(out), overwrite=True)
    assert again["checkpoint"] == first["checkpoint"] and ckpt.latest_checkpoint(out) == out / "step-000001"
    assert not [p for p in out.iterdir() if p.name.startswith((".old-", ".tmp-"))]


@pytest.mark.deepspeed
@pytest.mark.parametrize("stage", [0, 2])
def test_deepspeed_skips_or_stops_on_an_infinite_gradient_norm(tiny_model, tmp_path, stage):  # noqa: F811
    pytest.importorskip("deepspeed", reason="DeepSpeed (optional extra cure[deepspeed]) is not installed")
    good = train_step(str(tiny_model), make_records(4), small_train_config(engine="deepspeed", zero_stage=stage),
                      str(tmp_path / "good"))
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in good["per_update"])  # ZeRO-0 reports it
    records = _huge(make_records(4), 1e20)
    cfg = small_train_config(engine="deepspeed", zero_stage=stage, max_abs_reward=1e30)
    with pytest.raises(NonFiniteError, match="the update was not applied"):
        train_step(str(tiny_model), records, cfg, str(tmp_path / "stop"))
    assert ckpt.latest_checkpoint(tmp_path / "stop") is None
    m = train_step(str(tiny_model), records, cfg.model_copy(update={"nonfinite": "skip"}), str(tmp_path / "skip"))
    assert m["skipped_updates"] == m["updates"] > 0
    before, after = load_weights(tiny_model), load_weights(m["checkpoint"])
    assert all(torch.equal(before[k], after[k]) for k in before)
