"""Benchmark of one training step on a small random Qwen2: packing vs padding, and overhead vs a bare loop.

Prints ratios measured in the same run (never asserted anywhere):

* tokens/s of the update loop with packed rows vs padded rows (same groups of sequences, same math);
* the stage's update loop (``cure.train.stage.train_step``, torch engine) against a bare PyTorch loop doing the
  same math on the same packed micro batches: an old-log-prob pass, then forward (logits of response positions
  only, as the stage asks for), clipped policy loss + k3 KL, backward, clip, AdamW; the stage also computes the
  entropy and the logged statistics;
* the whole ``train_step`` call (loading, tokenising, checkpoint writing included) against the bare loop.

Usage: ``python bench/bench_train.py [--records 24] [--hidden 128] [--layers 4] [--repeats 2]``, or
``--records-file REWARDS.jsonl --model DIR`` for a real round's reward records on its model (for example a demo
round's ``execute-N/rewards`` under ``runs/demo/kfp/`` and ``$CURE_CACHE/tiny-seed0``, with ``--packing-max-len 1024``
as the demo). Which layout wins depends on the rows: packing wastes no slot but attends across a packed row's whole
length (no variable-length attention kernel on CPU), padding wastes slots but attends within each row only.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from train_fixtures import build_tiny_model  # noqa: E402

from cure.config import TrainConfig  # noqa: E402
from cure.train.data import make_micro_batches, split_by_role, tokenize_records  # noqa: E402
from cure.train.objective import kl_estimate  # noqa: E402
from cure.train.stage import train_step  # noqa: E402


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Prompts of 30-80 words and responses of 5-250 words: lengths spread like real rollouts, so padding wastes."""
    rng = random.Random(seed)
    words = ["print", "input", "for", "range", "def", "return", "x", "1", "2", "(", ")", ":", "sum", "map"]
    recs = []
    for i in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(30, 80)))
        response = " ".join(rng.choice(words) for _ in range(rng.randint(5, 250)))
        recs.append({"prompt": prompt, "response": response, "reward": rng.uniform(-1, 1),
                     "role": "coder" if i % 2 == 0 else "tester", "task_id": f"t{i // 8}", "truncated": False})
    return recs


def bare_loop(model_dir: Path, records: list[dict], cfg: TrainConfig) -> tuple[float, float, int]:
    """The same math without the stage: returns (wall s, CPU s of the update loop, response tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=tuple(cfg.adam_betas))
    samples, _ = tokenize_records(records, tok, cfg.prompt_max_len, cfg.generate_max_len)
    phases = [make_micro_batches(g, cfg.packing_max_len, tok.pad_token_id, "pack") for _, g in split_by_role(samples, True)]
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    for mbs in phases:
        model.eval()
        with torch.no_grad():
            old = []
            for mb in mbs:
                logits = model(input_ids=mb.input_ids, position_ids=mb.position_ids, logits_to_keep=mb.target_index).logits[0]
                old.append(torch.log_softmax(logits.float(), -1).gather(-1, mb.target_ids[:, None])[:, 0])
        model.train()
        for mb, old_lp in zip(mbs, old, strict=True):
            logits = model(input_ids=mb.input_ids, position_ids=mb.position_ids, logits_to_keep=mb.target_index).logits[0]
            lp = torch.log_softmax(logits.float(), -1).gather(-1, mb.target_ids[:, None])[:, 0]
            ratio = torch.exp(lp - old_lp)
            pg = -torch.minimum(ratio * mb.advantages, ratio.clamp(0.8, 1.2) * mb.advantages).mean()
            loss = pg + cfg.kl_coef * kl_estimate(lp, old_lp, "k3").mean()
            (loss / len(mbs)).backward()
            tokens += mb.response_tokens
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, time.process_time() - c0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="best of N for each measurement")
    ap.add_argument("--records-file", help="reward records (JSON Lines) instead of the generated ones")
    ap.add_argument("--model", help="with --records-file: the model they were sampled from (save_pretrained folder)")
    ap.add_argument("--packing-max-len", type=int, default=1024)
    args = ap.parse_args()
    if bool(args.records_file) != bool(args.model):
        ap.error("--records-file and --model go together")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.records_file:
            from cure.tasks import read_jsonl

            model_dir, records = Path(args.model), read_jsonl(args.records_file)
        else:
            model_dir = build_tiny_model(tmp / "model", hidden=args.hidden, layers=args.layers, vocab_size=400)
            records = make_records(args.records)
        cfg = TrainConfig(engine="torch", prompt_max_len=256, generate_max_len=512, packing_max_len=args.packing_max_len,
                          micro_batch_tokens=args.packing_max_len, gradient_checkpointing=False)
        # Warm-up: first-call costs (imports, kernel selection) would otherwise land on whichever runs first.
        train_step(str(model_dir), records[:4], cfg, str(tmp / "warmup"))
        bare_loop(model_dir, records[:4], cfg)
        best: dict[str, dict] = {}
        bares = []
        for r in range(args.repeats):  # interleaved, so a noisy neighbour hurts all three alike
            for layout in ("pack", "pad"):
                m = train_step(str(model_dir), records, cfg, str(tmp / f"{layout}{r}"), layout=layout)
                if layout not in best or m["train_cpu_time"] < best[layout]["train_cpu_time"]:
                    best[layout] = m
            bares.append(bare_loop(model_dir, records, cfg))
        bare = min(bares, key=lambda x: x[1])
    pack, padm = best["pack"], best["pad"]
    bare_wall, bare_cpu, bare_tokens = bare
    what = args.model if args.records_file else f"Qwen2 hidden={args.hidden} layers={args.layers}"
    print(f"model: {what}; {len(records)} records, "
          f"{pack['tokens']} response tokens, {pack['micro_batches']} packed micro batches; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    print("CPU seconds are the process's own (less sensitive to other load on a shared machine than wall time)")
    for name, m in (("packing", pack), ("padding", padm)):
        print(f"{name}: {m['tokens'] / m['train_time']:.0f} response tokens/s wall, "
              f"{m['tokens'] / m['train_cpu_time']:.0f} per CPU-s, padding waste {m['padding_fraction']:.1%}")
    print(f"bare PyTorch loop (same math, packed): {bare_tokens / bare_wall:.0f} response tokens/s wall, "
          f"{bare_tokens / bare_cpu:.0f} per CPU-s")
    print(f"ratio packing/padding throughput: {padm['train_time'] / pack['train_time']:.2f}x wall, "
          f"{padm['train_cpu_time'] / pack['train_cpu_time']:.2f}x CPU")
    print(f"ratio stage update loop / bare loop time: {pack['train_time'] / bare_wall:.2f}x wall, "
          f"{pack['train_cpu_time'] / bare_cpu:.2f}x CPU")
    print(f"ratio whole train_step (load, tokenise, save) / bare loop wall time: {pack['time'] / bare_wall:.2f}x")

if __name__ == "__main__":
    main()
