"""Benchmark of the tiny model's warm-start step: the model's own ``forward`` against the build's functional loss
in float32 and in bfloat16 (mixed precision by hand, :func:`cure.tiny.model._response_loss`).

Each variant trains its own copy of the same freshly initialised model on the same batches; the steps are
interleaved (A, B, C, A, B, C, ...) so that a change in the machine's load hits every variant alike. Prints the
median seconds per step and the ratios to the ``forward`` baseline (never asserted anywhere), for each thread
count asked for. The batches are the build's own (the synthetic train split, the build's batch size).

Usage: ``python bench/bench_tiny.py [--steps 30] [--threads 1 2]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cure import synthetic, tiny
from cure.prompts import PromptTemplates


def forward_loss(model, ids, where, targets, rope, dtype):  # noqa: ANN001, ANN201 - same signature as the build's
    """The baseline: the model's own forward with an attention mask and labels (what the build called first)."""
    del rope, dtype
    labels = torch.full_like(ids, -100)
    labels[:, 1:][where] = targets
    # Rows are right-padded and end with their last response token: ``where[:, j]`` marks token j + 1.
    positions = torch.arange(1, ids.shape[1])
    length = (where * positions).amax(dim=1) + 1
    mask = torch.arange(ids.shape[1])[None, :] < length[:, None]
    return model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="measured steps per variant (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    spec = tiny.TinySpec()
    tasks = synthetic.generate_tasks(600, 0, "train")
    templates = PromptTemplates.load(tiny.TEMPLATES_DIR)
    with tempfile.TemporaryDirectory() as d:
        tok = tiny.train_tokenizer(tiny.tokenizer_corpus(tasks, templates), spec.vocab_size, Path(d))
    pairs = tiny.sft_pairs(tasks, tok, templates, random.Random(0), spec.p_example, spec.tests_per_task,
                           spec.code_share, spec.wrong_code_share, spec.wrong_test_share)
    examples = tiny.sft._encode_pairs(pairs, tok)
    order = tiny.warm_start._length_batches([len(ids) for ids, _ in examples], spec.batch_size, random.Random(0))
    batches = [tiny.warm_start._batch_tensors([examples[i] for i in b], tok.pad_token_id) for b in order[: args.steps + 3]]
    tokens = statistics.mean(b[0].numel() for b in batches)
    base = tiny.new_model(tok, spec, 0)
    variants = {
        "forward (float32)": (forward_loss, torch.float32),
        "functional float32": (tiny.model._response_loss, torch.float32),
        "functional bfloat16": (tiny.model._response_loss, torch.bfloat16),
    }
    print(f"tiny warm-start step, batch {spec.batch_size} ({tokens:.0f} tokens with padding), {args.steps} steps per "
          f"variant, interleaved; auto precision here: {tiny.compute_dtype('auto')}; load {os.getloadavg()[0]:.1f}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        state = {}
        for name, (fn, dtype) in variants.items():
            model = copy.deepcopy(base)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
            state[name] = (fn, dtype, model, opt, tiny.model._Rope(model.config, spec.max_positions, dtype), [])
        for i, batch in enumerate(batches):
            for fn, dtype, model, opt, rope, times in state.values():
                t0 = time.perf_counter()
                loss = fn(model, *batch, rope, dtype)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if i >= 3:
                    times.append(time.perf_counter() - t0)
        ref = statistics.median(state["forward (float32)"][5])
        print(f"\n{threads} thread(s):")
        for name, (*_, times) in state.items():
            med = statistics.median(times)
            print(f"  {name:22s} {med * 1000:7.1f} ms/step  {ref / med:5.2f}x the forward baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
