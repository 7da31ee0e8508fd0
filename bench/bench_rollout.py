"""Rollout throughput: generated tokens per second of each engine available here, on the same prompts.

    python bench/bench_rollout.py                 # hf, openai (through a local server), vllm if importable
    python bench/bench_rollout.py --gpu           # vLLM on a Qwen2.5-7B-sized model (random weights), GPU only

The CPU run uses the tiny model (built and cached in .cache/tiny-model unless --model is given) and the coder
and tester prompts of a few synthetic tasks; it prints tokens/s per engine and the ratio to the hf engine
measured in the same run. The openai row is the hf engine behind cure.rollout.serve on 127.0.0.1, so it shows
the cost of the HTTP layer. The --gpu run needs no weights: vLLM's ``load_format="dummy"`` initialises a model
with Qwen2.5-7B-Instruct's shapes (and the tiny tokenizer's vocabulary) so the number reflects a real model size.
Not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from cure.config import RolloutConfig
from cure.prompts import PromptTemplates, code_prompt, test_prompt
from cure.rollout.engine import Engine, SamplingParams
from cure.rollout.registry import make_engine
from cure.rollout.vllm_engine import vllm_available
from cure.synthetic import generate_tasks

ROOT = Path(__file__).resolve().parents[1]
# Qwen2.5-7B-Instruct's architecture (config.json of the released model), vocabulary excepted.
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6)


def bench_prompts(model_dir: Path, tokenizer, n_tasks: int) -> list[str]:
    templates = PromptTemplates.load(model_dir / "prompts" if (model_dir / "prompts").is_dir() else None)
    tasks = generate_tasks(n_tasks, seed=11, split="heldout")
    return [code_prompt(t.question, tokenizer, templates) for t in tasks] + [
        test_prompt(t.question, t.example_input[:1], t.example_output[:1], tokenizer, templates) for t in tasks
    ]


def measure(engine: Engine, prompts: list[str], params: SamplingParams, repeat: int = 2) -> tuple[float, int]:
    """Best of ``repeat`` timed runs (the machine is shared) after a short warm-up on the same prompts."""
    engine.generate(prompts, SamplingParams(n=params.n, max_new_tokens=4, seed=0))
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = engine.generate(prompts, params)
        seconds = time.perf_counter() - t0
        tokens = sum(c.num_tokens for r in out for c in r)
        if best is None or tokens / seconds > best[1] / best[0]:
            best = (seconds, tokens)
    return best


def cpu_bench(args: argparse.Namespace) -> list[dict]:
    from cure.rollout.serve import ServerState, make_server

    model_dir = Path(args.model) if args.model else _tiny()
    rc = RolloutConfig(engine="hf", batch_size=args.batch_size, api_max_concurrency=4, api_rpm_limit=100000,
                       api_mode="completions")
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, stop=list(rc.stop), seed=0)
    hf = make_engine("hf", str(model_dir), rc)
    prompts = bench_prompts(model_dir, hf.tokenizer, args.tasks)
    rows = []

    def row(name: str, engine: Engine) -> None:
        seconds, tokens = measure(engine, prompts, params)
        rows.append({"engine": name, "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)})
        print(f"{name:>8}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tokens/s", flush=True)

    row("hf", hf)
    server = make_server(ServerState(hf, "bench"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rc.api_base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        row("openai", make_engine("openai", "bench", rc, api_key="EMPTY", tokenizer_obj=hf.tokenizer))
    finally:
        server.shutdown()
        server.server_close()
    if vllm_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        row("vllm", make_engine("vllm", str(model_dir), rc))
    else:
        print("    vllm: not installed here (make test-vllm builds .venv-vllm; run this script with its python)")
    return rows


def gpu_bench(args: argparse.Namespace) -> list[dict]:
    import torch

    if not torch.cuda.is_available() or not vllm_available():
        print("--gpu needs a CUDA GPU and vllm; skipping", file=sys.stderr)
        return []
    from transformers import AutoTokenizer, Qwen2Config

    tiny = Path(args.model) if args.model else _tiny()
    tok = AutoTokenizer.from_pretrained(tiny)
    model_dir = ROOT / ".cache" / "bench-qwen2.5-7b-shape"
    model_dir.mkdir(parents=True, exist_ok=True)
    Qwen2Config(vocab_size=len(tok), tie_word_embeddings=False, torch_dtype="bfloat16",
                eos_token_id=tok.eos_token_id, **QWEN25_7B).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rc = RolloutConfig(engine="vllm", dtype="bfloat16", max_model_len=4096, tensor_parallel_size=args.tp)
    vl = make_engine("vllm", str(model_dir), rc, load_format="dummy")
    prompts = bench_prompts(tiny, tok, args.tasks)
    # random weights rarely emit a stop: every sequence runs to the token limit, a fair throughput load
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    seconds, tokens = measure(vl, prompts, params)
    print(f"vllm gpu (Qwen2.5-7B shapes, bf16, tp={args.tp}): {tokens} tokens in {seconds:.2f} s = "
          f"{tokens / seconds:.1f} tokens/s ({len(prompts)} prompts x {args.n})")
    return [{"engine": "vllm-gpu-7b", "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}]


def _tiny() -> Path:
    from cure.tiny import build_tiny_model

    return build_tiny_model(ROOT / ".cache" / "tiny-model")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the tiny model, built and cached)")
    p.add_argument("--tasks", type=int, default=4, help="synthetic tasks (each gives a coder and a tester prompt)")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32, help="hf engine batch size")
    p.add_argument("--gpu", action="store_true", help="vLLM on a Qwen2.5-7B-sized model (dummy weights)")
    p.add_argument("--tp", type=int, default=1, help="--gpu: tensor parallel size")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.gpu:
        args.tasks, args.n, args.max_new_tokens = max(args.tasks, 32), max(args.n, 16), max(args.max_new_tokens, 512)
        rows = gpu_bench(args)
    else:
        rows = cpu_bench(args)
        base = next((r["tokens_per_s"] for r in rows if r["engine"] == "hf"), None)
        for r in rows:
            print(f"{r['engine']:>8}: {r['tokens_per_s'] / base:.2f}x hf")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
