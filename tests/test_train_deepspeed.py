"""DeepSpeed ZeRO-2/3 on CPU (gloo) against the plain torch engine on the same batch.

The first DeepSpeed use on a machine JIT-compiles its CPU communication op with g++ (about a minute, then cached
in ~/.cache/torch_extensions); these tests tolerate that. DeepSpeed is the optional extra ``cure[deepspeed]``:
without it the module is skipped, and says so.
"""

from __future__ import annotations

import pytest
from train_fixtures import load_weights, make_records, small_train_config, tiny_model  # noqa: F401

pytest.importorskip("deepspeed", reason="DeepSpeed (optional extra cure[deepspeed]) is not installed")

from cure.train import checkpoint as ckpt  # noqa: E402
from cure.train.stage import train_step  # noqa: E402

pytestmark = pytest.mark.deepspeed
RECORDS = make_records(12, seed=7)


@pytest.fixture(scope="module")
def torch_run(tiny_model, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("torch-engine")
    m = train_step(str(tiny_model), RECORDS, small_train_config(policy_update_steps=2), str(out))
    return m, load_weights(ckpt.resolve_model_dir(out))


def _compare(m: dict, weights: dict, ref: tuple[dict, dict]) -> None:
    ref_m, ref_w = ref
    assert len(m["per_update"]) == len(ref_m["per_update"]) == 4
    for a, b in zip(m["per_update"], ref_m["per_update"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["kl"] == pytest.approx(b["kl"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert weights.keys() == ref_w.keys()
    worst = max((weights[k] - ref_w[k]).abs().max().item() for k in weights)
    assert worst < 1e-5, f"weights differ from the torch engine's by {worst}"


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_stage_matches_torch_engine(tiny_model, tmp_path, torch_run, stage):  # noqa: F811
    # gradient checkpointing on: recomputation must not change the numbers either
    cfg = small_train_config(engine="deepspeed", zero_stage=stage, policy_update_steps=2, gradient_checkpointing=True)
    m = train_step(str(tiny_model), RECORDS, cfg, str(tmp_path / "ds"))
    assert m["engine"] == "deepspeed" and m["zero_stage"] == stage
    # the checkpoint (gathered from the ZeRO partitions) round-trips through from_pretrained
    _compare(m, load_weights(ckpt.resolve_model_dir(tmp_path / "ds")), torch_run)


def test_zero3_initial_reference_and_optimizer_resume(tiny_model, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = small_train_config(engine="deepspeed", zero_stage=3, save_optimizer_state=True, reference="initial")
    first = train_step(str(tiny_model), RECORDS, cfg, str(out), ref_model_dir=str(tiny_model))
    assert (out / "step-000001" / "optimizer" / "deepspeed").is_dir()  # ZeRO-3 optimizer partitions
    assert abs(first["per_update"][0]["kl"]) < 1e-6  # the ZeRO-3 reference engine agrees with the policy
    m = train_step(str(tiny_model), RECORDS, cfg, str(out), resume_from=str(out), ref_model_dir=str(tiny_model))
    assert m["step"] == 2 and ckpt.resolve_model_dir(out).name == "step-000002"
    assert all(r["kl"] > 0 for r in m["per_update"])  # the policy has moved away from the initial model


def test_two_process_zero3_torchrun_matches_torch_engine(tiny_model, tmp_path, torch_run, monkeypatch):  # noqa: F811
    """train.nproc_per_node=2 through cure.stages.train, the train pod's code path: the launcher runs torchrun
    with two gloo ranks (DeepSpeed ZeRO-3), which must train exactly what one torch process does."""
    from cure.config import CureConfig
    from cure.stages import train
    from cure.tasks import write_jsonl

    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, RECORDS)
    cfg = CureConfig(train=small_train_config(policy_update_steps=2, engine="deepspeed", zero_stage=3,
                                              nproc_per_node=2))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    m = train(str(tiny_model), str(data), cfg, str(tmp_path / "out"), None, round_=0)
    assert m["world_size"] == 2 and m["zero_stage"] == 3 and m["examples"] == len(RECORDS)
    ref_m, ref_w = torch_run
    assert m["loss"] == pytest.approx(ref_m["loss"], abs=1e-5) and m["kl"] == pytest.approx(ref_m["kl"], abs=1e-6)
    weights = load_weights(tmp_path / "out")
    worst = max((weights[k] - ref_w[k]).abs().max().item() for k in ref_w)
    assert weights.keys() == ref_w.keys() and worst < 1e-5, f"weights differ from the torch engine's by {worst}"


def test_cli_flag_nproc_per_node_defaults_to_the_config():
    import argparse

    from cure_cli.train import configure as configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--model", "m", "--data", "d", "--out", "o"])
    assert args.nproc_per_node is None  # run_cli then takes train.nproc_per_node
