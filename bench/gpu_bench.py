"""Training-step and rollout throughput of a Qwen2.5-shaped model: tokens/s and model FLOPs utilisation (MFU).

The model is built from a config with random weights (nothing is downloaded): the shape of Qwen2.5-1.5B by default
(``--shape``: 0.5b, 1.5b, 3b, 7b). Each case runs in its own process, as a train pod would:

* ``torch_bf16``: :class:`cure.train.engines.TorchEngine` (float32 weights and AdamW, bf16 autocast on a GPU);
* ``deepspeed_zero2_bf16``, ``deepspeed_zero3_bf16``: :class:`cure.train.engines.DeepSpeedEngine` (bf16 weights,
  FusedAdam on a GPU);
* ``rollout_hf``: :class:`cure.rollout.hf.HFEngine` sampling ``--rollout-n`` responses per prompt in bf16.

A training case runs what :func:`cure.train.stage.train_step` runs on its micro batches: packed rows
(:func:`cure.train.data.make_micro_batches`, ``layout=pack``) of sequences with random tokens and lengths drawn like
rollouts', the old-log-probability pass (:func:`cure.train.stage.compute_logprobs`), then updates
(:func:`cure.train.stage._run_update`: forward on the response positions, clipped loss with k3 KL, backward, clip,
AdamW), ``--rows`` rows per update, gradient checkpointing on (the default). The first update is a warm-up; the
next ``--steps`` are timed.

Model FLOPs (:func:`model_flops`) count the matrix multiplications the model needs, not what an implementation
spends (recomputation under gradient checkpointing is not counted, as MFU is usually defined):
``6 N T`` for the decoder's weight matrices (``N`` = :func:`matmul_params`, ``T`` tokens; 2 instead of 6 for a pass
without backward), ``6 V d T_logits`` for the output layer on the positions whose logits are computed (the stage asks
for response positions only), and ``12 L h d_head P`` for attention, ``P`` = the (query, key) pairs, ``s (s + 1) / 2``
per causal sequence of length ``s`` (packed sequences attend within themselves). MFU = model FLOPs per second /
the card's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`, or ``--peak-tflops``).

On a GPU machine (one run of a few minutes; DeepSpeed JIT-builds FusedAdam on its first use, about 45 s, and needs
a plain ``TORCH_CUDA_ARCH_LIST``, see ``bench/gpu_check.py``)::

    TORCH_CUDA_ARCH_LIST=9.0 python bench/gpu_bench.py --out bench/results/gpu_bench_h200.json

On a CPU, reduced (what the tests run): ``python bench/gpu_bench.py --tiny --out report.json`` (a 2-layer model,
float32: the engines use bf16 on a GPU only; MFU only with ``--peak-tflops``). Not a test: it asserts nothing
about speed; a failing case is recorded with its error and the other cases still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# Released Qwen2.5 configs (config.json of each base model); "tiny" is the CPU test shape.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
}
COMMON = dict(max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu",
              use_sliding_window=False, use_cache=False)

# Dense (not sparse) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; the first name found in
# torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
]
TRAIN_CASES = {
    "torch_bf16": ("torch", 0),
    "deepspeed_zero2_bf16": ("deepspeed", 2),
    "deepspeed_zero3_bf16": ("deepspeed", 3),
}
ROLLOUT_CASES = ("rollout_hf",)


# --- FLOPs -----------------------------------------------------------------------------------------------------------


def _dims(shape: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    d, heads = shape["hidden_size"], shape["num_attention_heads"]
    head_dim = shape.get("head_dim") or d // heads
    return d, shape["num_hidden_layers"], heads, shape["num_key_value_heads"], head_dim, shape["intermediate_size"]


def matmul_params(shape: dict[str, Any]) -> int:
    """Weights of the decoder layers' matrix multiplications (q, k, v, o; gate, up, down): the ``N`` of ``6 N T``.
    Embedding and output layer excluded (the lookup is no multiplication; the output layer is counted apart), as are
    biases and norm weights (no multiply-add per weight)."""
    d, layers, heads, kv, hd, ff = _dims(shape)
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    return layers * (attention + 3 * d * ff)


def attention_pairs(seq_lens: list[int], causal: bool = True) -> int:
    """(query, key) pairs the attention computes: ``s (s + 1) / 2`` per causal sequence, ``s * s`` otherwise."""
    return sum(s * (s + 1) // 2 if causal else s * s for s in seq_lens)


def model_flops(shape: dict[str, Any], seq_lens: list[int], logit_tokens: int, backward: bool = True,
                causal: bool = True) -> int:
    """Model FLOPs of one pass over sequences of ``seq_lens`` tokens (module docstring): ``k N T`` +
    ``k V d T_logits`` + ``2 k L h d_head P``, with ``k`` = 6 with backward (forward 2, backward 4), 2 without."""
    d, layers, heads, _, hd, _ = _dims(shape)
    k = 6 if backward else 2
    tokens = sum(seq_lens)
    dense = k * matmul_params(shape) * tokens
    head = k * shape["vocab_size"] * d * logit_tokens
    attention = 2 * k * layers * heads * hd * attention_pairs(seq_lens, causal)
    return dense + head + attention


def peak_tflops(device_name: str) -> float | None:
    for name, tflops in PEAK_BF16_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops
    return None


# --- model, tokenizer and data ---------------------------------------------------------------------------------------


def build_model(shape: dict[str, Any], dtype: Any, device: Any, seed: int = 0) -> Any:
    """A Qwen2 causal LM of ``shape`` with random weights, built directly on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(**COMMON, **shape)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def word_tokenizer(vocab_size: int) -> Any:
    """A tokenizer with one word per id (``<pad>``, ``<eos>``, then ``t2`` ... ``tN``): decoding and re-encoding a
    random model's output keeps its token count, which is what the rollout engine reports. (Special tokens are
    matched inside words, so none of them may be the start of a word.)"""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<pad>", pad_token="<pad>", eos_token="<eos>")


def make_samples(n: int, vocab: int, prompt: tuple[int, int], response: tuple[int, int], seed: int) -> list[Any]:
    """Reward records already tokenised: random tokens, lengths uniform in the ranges, rewards +-1, both roles."""
    from cure.train.data import Sample

    rng = random.Random(seed)

    def ids(lo_hi: tuple[int, int]) -> list[int]:
        return [rng.randrange(2, vocab) for _ in range(rng.randint(*lo_hi))]

    return [Sample(i, ids(prompt), ids(response), rng.choice((-1.0, 1.0)), "coder", f"t{i // 16}", False)
            for i in range(n)]


def packed_rows(samples: list[Any], row_tokens: int, needed: int) -> list[Any]:
    from cure.train.data import make_micro_batches

    mbs = make_micro_batches(samples, row_tokens, 0, "pack")
    if len(mbs) < needed:
        raise ValueError(f"{len(samples)} samples make {len(mbs)} packed rows of {row_tokens} tokens; need {needed}")
    return mbs[:needed]


def row_sequences(mb: Any, samples: list[Any]) -> list[int]:
    """Lengths of the sequences packed in a micro batch."""
    index = {s.index: s for s in samples}
    return [index[i].length for i in sorted(set(mb.sample_index.tolist()))]


# --- cases -----------------------------------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(flops: int, seconds: float, peak: float | None) -> dict[str, Any]:
    tflops = flops / seconds / 1e12
    return {"model_tflops": flops / 1e12, "achieved_tflops_per_s": tflops,
            "mfu": tflops / peak if peak else None}


def train_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One training case (module docstring): tokens/s and MFU of the updates and of the log-probability pass."""
    import torch

    from cure.config import TrainConfig
    from cure.train.engines import build_engine, init_distributed
    from cure.train.stage import Item, _run_update, compute_logprobs

    engine_name, stage = TRAIN_CASES[name]
    shape = SHAPES[args.shape]
    rows = args.rows
    cfg = TrainConfig(engine=engine_name, zero_stage=stage, bf16=True, gradient_checkpointing=True,
                      learning_rate=1e-6, packing_max_len=args.row_tokens, micro_batch_tokens=args.row_tokens,
                      prompt_max_len=args.prompt_len[1], generate_max_len=args.response_len[1])
    dist_info = init_distributed(cfg.engine)
    device = dist_info.device
    on_gpu = device.type == "cuda"
    # The DeepSpeed engine trains bf16 weights on a GPU; the torch engine float32 weights under bf16 autocast.
    dtype = torch.bfloat16 if on_gpu and engine_name == "deepspeed" else torch.float32
    samples = make_samples(args.samples, shape["vocab_size"], tuple(args.prompt_len), tuple(args.response_len), seed=1)
    mbs = packed_rows(samples, args.row_tokens, rows * (args.steps + 1))
    model = build_model(shape, dtype, device if engine_name == "torch" else ("cpu" if not on_gpu else device))
    t0 = time.perf_counter()
    engine = build_engine(model, cfg, dist_info, train=True, grad_accum=rows)
    _sync(device)
    init_s = time.perf_counter() - t0
    del model
    peak = args.peak_tflops or (peak_tflops(torch.cuda.get_device_name(device)) if on_gpu else None)

    # The old-log-probability pass over every row (forward only, response positions' logits).
    t0 = time.perf_counter()
    old = compute_logprobs(engine, mbs)
    _sync(device)
    lp_s = time.perf_counter() - t0
    lens = [row_sequences(mb, samples) for mb in mbs]
    logits = [mb.response_tokens for mb in mbs]
    lp_flops = sum(model_flops(shape, ls, n, backward=False) for ls, n in zip(lens, logits))
    lp_tokens = sum(mb.real_tokens for mb in mbs)

    updates = []
    for u in range(args.steps + 1):
        group = list(range(u * rows, (u + 1) * rows))
        items = [Item(mbs[i], 1.0 / rows) for i in group]
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        stats = _run_update(engine, items, old, old, cfg, dist_info)
        _sync(device)
        seconds = time.perf_counter() - t0
        flops = sum(model_flops(shape, lens[i], logits[i]) for i in group)
        updates.append({"seconds": seconds, "tokens": sum(mbs[i].real_tokens for i in group),
                        "response_tokens": sum(logits[i] for i in group), "model_flops": flops,
                        "sequence_lengths": [lens[i] for i in group], "logit_tokens": [logits[i] for i in group],
                        "loss": stats["loss"], "grad_norm": stats["grad_norm"], "warmup": u == 0,
                        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else None})
    timed = [u for u in updates if not u["warmup"]]
    seconds = sum(u["seconds"] for u in timed)
    flops = sum(u["model_flops"] for u in timed)
    return {
        "engine": engine_name, "zero_stage": stage if engine_name == "deepspeed" else None,
        "compute_dtype": "bfloat16" if on_gpu else "float32", "weights_dtype": str(dtype).replace("torch.", ""),
        "rows_per_update": rows, "row_tokens": args.row_tokens, "timed_updates": len(timed),
        "engine_init_s": init_s,
        "update": {"seconds": seconds / len(timed), "tokens_per_s": sum(u["tokens"] for u in timed) / seconds,
                   "response_tokens_per_s": sum(u["response_tokens"] for u in timed) / seconds,
                   **_rate(flops, seconds, peak)},
        "logprob_pass": {"seconds": lp_s, "tokens_per_s": lp_tokens / lp_s, **_rate(lp_flops, lp_s, peak)},
        "peak_tflops": peak, "updates": updates,
    }


def rollout_case(args: argparse.Namespace) -> dict[str, Any]:
    """The hf engine sampling ``rollout_n`` responses of up to ``max_new`` tokens per prompt."""
    import torch

    from cure.config import RolloutConfig
    from cure.rollout.engine import SamplingParams
    from cure.rollout.hf import HFEngine

    shape = SHAPES[args.shape]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tok = word_tokenizer(shape["vocab_size"])
    model = build_model(shape, dtype, device)
    engine = HFEngine("random-" + args.shape, RolloutConfig(batch_size=args.rollout_batch, dtype=str(dtype)[6:]),
                      device=str(device), model_obj=model, tokenizer_obj=tok)
    rng = random.Random(2)
    prompts = [" ".join(f"t{rng.randrange(2, shape['vocab_size'])}" for _ in range(args.prompt_len[1]))
               for _ in range(args.rollout_prompts)]
    params = SamplingParams(n=args.rollout_n, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new, seed=0)
    engine.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=8, seed=0))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    out = engine.generate(prompts, params)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(c.num_tokens for row in out for c in row)
    return {"engine": "hf", "dtype": str(dtype).replace("torch.", ""), "sequences": sum(len(r) for r in out),
            "batch_size": args.rollout_batch, "prompt_tokens": args.prompt_len[1], "max_new_tokens": args.max_new,
            "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    return rollout_case(args) if name in ROLLOUT_CASES else train_case(name, args)


# --- driver ----------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    else:
        info["device"] = "cpu"
    try:
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    except ImportError:
        info["deepspeed"] = None
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="qwen2.5-1.5b", choices=sorted(SHAPES))
    ap.add_argument("--cases", default=",".join([*TRAIN_CASES, *ROLLOUT_CASES]),
                    help="comma-separated: " + ", ".join([*TRAIN_CASES, *ROLLOUT_CASES]))
    ap.add_argument("--steps", type=int, default=3, help="timed updates per training case (after one warm-up)")
    ap.add_argument("--rows", type=int, default=4, help="packed rows (micro batches) per update")
    ap.add_argument("--row-tokens", type=int, default=16384, help="tokens per packed row")
    ap.add_argument("--samples", type=int, default=512, help="sequences drawn to fill the rows")
    ap.add_argument("--prompt-len", type=int, nargs=2, default=[200, 800], metavar=("MIN", "MAX"))
    ap.add_argument("--response-len", type=int, nargs=2, default=[100, 3000], metavar=("MIN", "MAX"))
    ap.add_argument("--rollout-prompts", type=int, default=32)
    ap.add_argument("--rollout-n", type=int, default=16, help="responses per prompt (paper: 16)")
    ap.add_argument("--rollout-batch", type=int, default=256, help="hf engine sequences per generate call")
    ap.add_argument("--max-new", type=int, default=512, help="tokens per response (random weights rarely stop early)")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, TFLOP/s (default: the table)")
    ap.add_argument("--tiny", "--cpu", action="store_true",
                    help="reduced run for a CPU: tiny shape, short rows, 2 timed updates, few rollouts")
    ap.add_argument("--out", help="write the report (JSON) here")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    ap.add_argument("--case-out", help=argparse.SUPPRESS)
    if ap.parse_known_args(argv)[0].tiny:  # other defaults; flags given still win
        ap.set_defaults(shape="tiny", steps=2, rows=2, row_tokens=256, samples=64, prompt_len=[8, 32],
                        response_len=[8, 96], rollout_prompts=2, rollout_n=4, rollout_batch=8, max_new=16)
    return ap.parse_args(argv)


def case_argv(args: argparse.Namespace, name: str, out: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--case", name, "--case-out", str(out),
            "--shape", args.shape, "--steps", str(args.steps), "--rows", str(args.rows),
            "--row-tokens", str(args.row_tokens), "--samples", str(args.samples),
            "--prompt-len", *map(str, args.prompt_len), "--response-len", *map(str, args.response_len),
            "--rollout-prompts", str(args.rollout_prompts), "--rollout-n", str(args.rollout_n),
            "--rollout-batch", str(args.rollout_batch), "--max-new", str(args.max_new)]
    return argv + (["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:  # one case, in this process
        try:
            result = {"ok": True, **run_case(args.case, args)}
        except Exception as e:  # recorded; the driver carries on with the other cases
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        Path(args.case_out).write_text(json.dumps(result))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    if unknown := set(cases) - {*TRAIN_CASES, *ROLLOUT_CASES}:
        raise SystemExit(f"error: --cases: unknown {sorted(unknown)}")
    import tempfile

    shape = SHAPES[args.shape]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "shape_name": args.shape,
        "shape": shape, "matmul_params": matmul_params(shape),
        "settings": {k: getattr(args, k) for k in ("steps", "rows", "row_tokens", "samples", "prompt_len",
                                                   "response_len", "rollout_prompts", "rollout_n", "rollout_batch",
                                                   "max_new", "peak_tflops", "tiny")},
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="cure-gpu-bench-") as tmp:
        for name in cases:
            out = Path(tmp) / f"{name}.json"
            t0 = time.monotonic()
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
            proc = subprocess.run(case_argv(args, name, out), env=env, capture_output=True, text=True)
            result = json.loads(out.read_text()) if out.is_file() else {
                "ok": False, "error": f"exit {proc.returncode}", "log_tail": (proc.stdout + proc.stderr)[-4000:]}
            result["process_s"] = time.monotonic() - t0
            report["cases"][name] = result
            print(summary_line(name, result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


def summary_line(name: str, r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"{name}: FAILED {r.get('error')}"
    if name in ROLLOUT_CASES:
        return f"{name}: {r['tokens_per_s']:,.0f} tokens/s ({r['sequences']} sequences, {r['seconds']:.1f} s)"
    u, lp = r["update"], r["logprob_pass"]
    mfu = f", MFU {100 * u['mfu']:.1f}%" if u["mfu"] is not None else ""
    lp_mfu = f", MFU {100 * lp['mfu']:.1f}%" if lp["mfu"] is not None else ""
    return (f"{name}: update {u['tokens_per_s']:,.0f} tokens/s, {u['achieved_tflops_per_s']:.2f} TFLOP/s{mfu}; "
            f"log-prob pass {lp['tokens_per_s']:,.0f} tokens/s{lp_mfu}")


if __name__ == "__main__":
    sys.exit(main())
