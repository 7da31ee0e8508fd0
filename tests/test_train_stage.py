"""The training step on the tiny model with the plain torch engine: objective, layouts, checkpoints, CLI, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import (  # noqa: F401  (tiny_model is a session fixture)
    load_weights,
    make_records,
    sequence_logprob,
    small_train_config,
    tiny_model,
)

from cure.train import checkpoint as ckpt
from cure.train.engines import TorchEngine, init_distributed
from cure.train.stage import train_step

PROMPT = "<|im_start|>User: add two numbers <|im_end|>\n<|im_start|>Assistant: "
RESPONSE = "def add(a, b):\n    return a + b\n"


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"


def test_first_update_has_zero_kl_and_unit_ratio(tiny_model, tmp_path):  # noqa: F811
    cfg = small_train_config(policy_update_steps=2)
    m = train_step(str(tiny_model), make_records(12), cfg, str(tmp_path / "out"))
    first = [r for r in m["per_update"] if r["update"] == 0]
    assert [r["phase"] for r in first] == ["coder", "tester"]  # separate training: coder, then tester
    for row in first:
        assert abs(row["kl"]) < 1e-6
        assert abs(row["ratio"] - 1.0) < 1e-6
        assert row["clip_frac"] == 0.0
        assert row["loss"] == pytest.approx(row["pg_loss"], abs=1e-6)
    later = [r for r in m["per_update"] if r["update"] == 1]
    assert all(r["kl"] > 0 and abs(r["ratio"] - 1) > 1e-4 for r in later)  # the policy moved within the step
    assert m["tokens"] > 0 and m["grad_norm"] > 0 and m["entropy"] > 0
    assert m["updates"] == 4 and m["step"] == 1


@pytest.mark.parametrize("reward", [1.0, -1.0])
def test_advantage_sign_moves_the_response_logprob(tiny_model, tmp_path, reward):  # noqa: F811
    records = [{"prompt": PROMPT, "response": RESPONSE, "reward": reward, "role": "coder", "task_id": "t",
                "truncated": True}]
    before = sequence_logprob(tiny_model, PROMPT, RESPONSE)
    m = train_step(str(tiny_model), records, small_train_config(), str(tmp_path / "out"))
    after = sequence_logprob(m["checkpoint"], PROMPT, RESPONSE)
    if reward > 0:
        assert after > before + 1e-3
    else:
        assert after < before - 1e-3


def test_packing_gives_the_same_loss_as_padding(tiny_model, tmp_path):  # noqa: F811
    cfg = small_train_config(policy_update_steps=2)
    records = make_records(12, seed=3)
    packed = train_step(str(tiny_model), records, cfg, str(tmp_path / "pack"), layout="pack")
    padded = train_step(str(tiny_model), records, cfg, str(tmp_path / "pad"), layout="pad")
    for a, b in zip(packed["per_update"], padded["per_update"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["kl"] == pytest.approx(b["kl"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert packed["padding_fraction"] == 0.0 and padded["padding_fraction"] > 0.1
    _assert_same_weights(load_weights(packed["checkpoint"]), load_weights(padded["checkpoint"]))


def test_joint_training_is_one_phase(tiny_model, tmp_path):  # noqa: F811
    m = train_step(str(tiny_model), make_records(8), small_train_config(), str(tmp_path / "o"), separate_training=False)
    assert m["phases"] == ["all"] and m["updates"] == 1


def test_reference_initial_needs_its_model(tiny_model, tmp_path):  # noqa: F811
    cfg = small_train_config(reference="initial", policy_update_steps=2)
    with pytest.raises(ValueError, match="ref-model"):
        train_step(str(tiny_model), make_records(6), cfg, str(tmp_path / "o"))
    m = train_step(str(tiny_model), make_records(6), cfg, str(tmp_path / "o"), ref_model_dir=str(tiny_model))
    assert abs(m["per_update"][0]["kl"]) < 1e-6  # the start model is the initial model here
    # the tester phase starts from the coder-updated policy, but the reference stays the initial model
    tester_first = next(r for r in m["per_update"] if r["phase"] == "tester")
    assert tester_first["kl"] > 0 and abs(tester_first["ratio"] - 1) < 1e-6


def test_checkpoint_round_trip_and_resume(tiny_model, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = small_train_config(save_optimizer_state=True)
    first = train_step(str(tiny_model), make_records(8), cfg, str(out))
    step1 = out / "step-000001"
    assert Path(first["checkpoint"]) == step1 and ckpt.resolve_model_dir(out) == step1
    assert (step1 / "model.safetensors").is_file() and (step1 / "optimizer" / "optimizer.pt").is_file()
    # from_pretrained on the folder gives the trained weights, not the start weights
    saved = load_weights(ckpt.resolve_model_dir(out))
    start = load_weights(tiny_model)
    assert any(not torch.equal(saved[k], start[k]) for k in saved)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(step1)("x")["input_ids"]

    second = train_step(str(tiny_model), make_records(8, seed=1), cfg, str(out), resume_from=str(out))
    assert second["step"] == 2 and second["global_updates"] == first["global_updates"] + second["updates"]
    assert ckpt.resolve_model_dir(out) == out / "step-000002"
    assert ckpt.read_trainer_state(out)["step"] == 2
    assert ckpt.read_trainer_state(out)["source_model"] == str(step1)  # continued from step 1's weights
    _assert_same_weights(load_weights(step1), saved, atol=0)  # the previous checkpoint is untouched
    # AdamW continued: its per-parameter step count runs on from step 1's instead of restarting at 0
    opt = torch.load(out / "step-000002" / "optimizer" / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in opt["state"].values()} == {second["global_updates"]}


def test_crash_while_saving_keeps_the_previous_checkpoint(tiny_model, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train_step(str(tiny_model), make_records(6), small_train_config(), str(out))
    good = load_weights(ckpt.resolve_model_dir(out))

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    engine = TorchEngine(str(ckpt.resolve_model_dir(out)), small_train_config(), init_distributed("torch"))
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(engine, BrokenTokenizer(), out, {"step": 2, "updates": 9})
    assert ckpt.resolve_model_dir(out) == out / "step-000001"
    assert not (out / "step-000002").exists()
    _assert_same_weights(load_weights(ckpt.resolve_model_dir(out)), good, atol=0)
    # the next successful save replaces the half-written folder
    from transformers import AutoTokenizer

    ckpt.save_checkpoint(engine, AutoTokenizer.from_pretrained(tiny_model), out, {"step": 2, "updates": 9})
    assert ckpt.resolve_model_dir(out) == out / "step-000002"
    assert not any(p.name.startswith(".tmp") for p in out.iterdir())


def test_cli_writes_checkpoint_metrics_and_tensorboard(tiny_model, tmp_path):  # noqa: F811
    from cure.tasks import write_jsonl
    from cure_cli import main

    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, make_records(8))
    out = tmp_path / "out"
    sets = ["--set", "train.prompt_max_len=48", "--set", "train.generate_max_len=48", "--set",
            "train.packing_max_len=120", "--set", "train.micro_batch_tokens=120", "--set", "train.gradient_checkpointing=true"]
    rc = main(["train", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--engine", "torch", *sets])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 1 and metrics["engine"] == "torch"
    for key in ("loss", "pg_loss", "kl", "entropy", "grad_norm", "clip_frac", "tokens", "time"):
        assert key in metrics
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    for tag in ("train/loss", "train/kl", "train/entropy", "train/grad_norm"):
        assert len(acc.Scalars(tag)) == metrics["updates"]
    assert main(["train", "--model", str(tiny_model), "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tiny_model, tmp_path):  # noqa: F811
    from cure.tasks import write_jsonl

    records = make_records(16, seed=2)
    # 5 micro batches per phase, split 2 + 3 over two updates: with 3, one rank runs a zero-weight pass
    cfg = small_train_config(policy_update_steps=2, packing_max_len=100, micro_batch_tokens=100)
    one = train_step(str(tiny_model), records, cfg, str(tmp_path / "one"))
    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, records)
    sets = []
    for key in ("prompt_max_len", "generate_max_len", "packing_max_len", "micro_batch_tokens", "learning_rate",
                "policy_update_steps", "gradient_checkpointing"):
        sets += ["--set", f"train.{key}={getattr(cfg, key)}"]
    cmd = [sys.executable, "-m", "cure_cli", "train", "--model", str(tiny_model), "--data", str(data), "--out",
           str(tmp_path / "two"), "--engine", "torch", "--nproc-per-node", "2", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert any(r["micro_batches"] % 2 for r in two["per_update"])  # uneven split exercised
    for a, b in zip(one["per_update"], two["per_update"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["tokens"] == b["tokens"]
    _assert_same_weights(load_weights(ckpt.resolve_model_dir(tmp_path / "one")),
                         load_weights(ckpt.resolve_model_dir(tmp_path / "two")))
