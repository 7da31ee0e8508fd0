"""bench/gpu_bench.py: its FLOP count (against the released shapes and torch's own FLOP counter) and its reduced CPU
run (the report's fields, MFU from the recorded FLOPs). Speed itself is never asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_bench.py"
spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
gb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gb)


def _model(shape: dict, device: str = "cpu", attn: str = "eager"):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(Qwen2Config(**gb.COMMON, **shape), attn_implementation=attn)


@pytest.mark.parametrize(("name", "card"), [("qwen2.5-0.5b", 0.36), ("qwen2.5-1.5b", 1.31), ("qwen2.5-7b", 6.53)])
def test_matmul_params_are_the_model_cards_non_embedding_parameters(name: str, card: float) -> None:
    # The model cards' "Number of Parameters (Non-Embedding)"; norms and biases, which N leaves out, are < 0.1%.
    assert gb.matmul_params(gb.SHAPES[name]) / 1e9 == pytest.approx(card, abs=0.005)


@pytest.mark.parametrize("name", ["tiny", "qwen2.5-1.5b", "qwen2.5-7b"])
def test_matmul_params_count_every_linear_weight_of_the_decoder_layers(name: str) -> None:
    model = _model(gb.SHAPES[name], device="meta")  # shapes only, no memory
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert gb.matmul_params(gb.SHAPES[name]) == linear


def test_model_flops_on_a_shape_counted_by_hand() -> None:
    shape = dict(hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                 vocab_size=10)
    # N = q 4*4 + k, v 2*(4*2) + o 4*4 + mlp 3*4*8 = 144; one causal sequence of 3 tokens has 6 (query, key) pairs.
    dense, head, attention = 6 * 144 * 3, 6 * 10 * 4 * 2, 12 * 1 * 2 * 2 * 6
    assert gb.model_flops(shape, [3], logit_tokens=2) == dense + head + attention == 3360
    assert gb.model_flops(shape, [3], logit_tokens=2, backward=False) == 3360 // 3
    assert gb.attention_pairs([3, 4]) == 6 + 10 and gb.attention_pairs([3, 4], causal=False) == 9 + 16


@pytest.mark.parametrize(("seq", "keep"), [(12, 0), (20, 7)])
def test_model_flops_equal_torchs_flop_counter(seq: int, keep: int) -> None:
    """torch counts every matrix multiplication of an eager forward and backward; eager attention multiplies the
    whole (query, key) square, so the count is the formula's with ``causal=False``."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = gb.SHAPES["tiny"]
    model = _model(shape)
    ids = torch.randint(0, shape["vocab_size"], (1, seq))
    logit_tokens = keep or seq
    with FlopCounterMode(display=False) as forward_only, torch.no_grad():
        model(input_ids=ids, logits_to_keep=keep)
    assert forward_only.get_total_flops() == gb.model_flops(shape, [seq], logit_tokens, backward=False, causal=False)
    with FlopCounterMode(display=False) as train:
        model(input_ids=ids, logits_to_keep=keep).logits.float().pow(2).mean().backward()
    assert train.get_total_flops() == gb.model_flops(shape, [seq], logit_tokens, causal=False)


def test_peak_table_picks_the_specific_card_name() -> None:
    assert gb.peak_tflops("NVIDIA H200") == 989.0
    assert gb.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gb.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gb.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gb.peak_tflops("some other card") is None


def _run(tmp_path: Path, cases: str) -> dict:
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--peak-tflops", "0.05", "--cases", cases,
                           "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def _check_train_case(report: dict, name: str) -> None:
    case = report["cases"][name]
    assert case["ok"], case
    shape = report["shape"]
    timed = [u for u in case["updates"] if not u["warmup"]]
    assert len(timed) == report["settings"]["steps"] == case["timed_updates"] == 2
    for u in case["updates"]:
        lens = u["sequence_lengths"]
        assert len(lens) == case["rows_per_update"]
        assert u["tokens"] == sum(sum(row) for row in lens) and all(sum(row) <= case["row_tokens"] for row in lens)
        assert u["model_flops"] == sum(gb.model_flops(shape, row, n) for row, n in zip(lens, u["logit_tokens"]))
        assert u["response_tokens"] == sum(u["logit_tokens"]) > 0
        assert u["loss"] == u["loss"] and u["grad_norm"] > 0  # finite loss, a gradient
    seconds = sum(u["seconds"] for u in timed)
    flops = sum(u["model_flops"] for u in timed)
    upd = case["update"]
    assert upd["tokens_per_s"] == pytest.approx(sum(u["tokens"] for u in timed) / seconds)
    assert upd["achieved_tflops_per_s"] == pytest.approx(flops / seconds / 1e12)
    assert upd["mfu"] == pytest.approx(upd["achieved_tflops_per_s"] / 0.05)
    lp = case["logprob_pass"]
    assert lp["mfu"] == pytest.approx(lp["achieved_tflops_per_s"] / 0.05) and lp["tokens_per_s"] > 0
    assert case["compute_dtype"] == "float32"  # bf16 is for GPUs only


@pytest.mark.slow
def test_tiny_cpu_run_torch_engine_and_rollout(tmp_path: Path) -> None:
    report = _run(tmp_path, "torch_bf16,rollout_hf")
    assert report["shape_name"] == "tiny" and report["machine"]["device"] == "cpu"
    assert report["matmul_params"] == gb.matmul_params(gb.SHAPES["tiny"])
    _check_train_case(report, "torch_bf16")
    ro = report["cases"]["rollout_hf"]
    assert ro["ok"], ro
    assert ro["sequences"] == report["settings"]["rollout_prompts"] * report["settings"]["rollout_n"]
    assert 0 < ro["tokens"] <= ro["sequences"] * ro["max_new_tokens"]
    assert ro["tokens_per_s"] == pytest.approx(ro["tokens"] / ro["seconds"])


@pytest.mark.slow
@pytest.mark.deepspeed
def test_tiny_cpu_run_deepspeed_zero3(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed (optional extra cure[deepspeed]) is not installed")
    report = _run(tmp_path, "deepspeed_zero3_bf16")
    _check_train_case(report, "deepspeed_zero3_bf16")
    assert report["cases"]["deepspeed_zero3_bf16"]["zero_stage"] == 3


@pytest.mark.slow
def test_a_failing_case_is_recorded_and_the_others_run(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    # Rows longer than any packing of the samples can fill: the case fails with its reason; the report is written.
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--cases", "torch_bf16", "--samples", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    case = json.loads(out.read_text())["cases"]["torch_bf16"]
    assert not case["ok"] and "packed rows" in case["error"]
