"""``cure model tiny``: build the offline tiny base model (tokenizer + warm start), :mod:`cure.tiny`."""

from __future__ import annotations

import argparse
import json
import logging

from cure.config import CureConfig
from cure.tiny import DTYPE_ENV, SHIPPED_DIR, TinySpec, build_tiny_model, file_checksums, measure

log = logging.getLogger("cure.tiny")


def configure_tiny(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the model (reused when already built with the same seed/steps/code)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tokenizer data, initialisation and warm start")
    parser.add_argument("--steps", type=int, default=None, help=f"warm-start optimizer steps (default {TinySpec.steps})")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default=None,
                        help=f"warm-start compute precision (default auto, or ${DTYPE_ENV}): bfloat16 where the CPU "
                        "multiplies it natively, else float32; the saved weights are float32 either way")
    parser.add_argument("--measure", action="store_true", help="then sample on held-out synthetic tasks and print the starting accuracy")
    parser.add_argument("--measure-tasks", type=int, default=64, help="--measure: held-out tasks")
    parser.add_argument("--measure-k", type=int, default=4, help="--measure: programs and tests sampled per task")
    parser.add_argument("--no-sandbox", action="store_true", help="--measure: skip running programs in gVisor (AST check only)")


def run_tiny(args: argparse.Namespace, cfg: CureConfig) -> int:
    out = build_tiny_model(args.out, seed=args.seed, steps=args.steps, dtype=args.dtype)
    print(out)
    shipped = SHIPPED_DIR / "build_info.json"
    if shipped.is_file() and (args.steps in (None, TinySpec.steps)) and args.seed == 0:
        same = file_checksums(out).get("model.safetensors") == json.loads(shipped.read_text())["files"]["model.safetensors"]
        log.info("the weights %s the shipped model's (%s)", "equal" if same else "differ from", SHIPPED_DIR)
    if args.measure:
        result = measure(out, n_tasks=args.measure_tasks, k=args.measure_k, sandbox=not args.no_sandbox)
        result.pop("responses")
        print(json.dumps(result, indent=2))
    return 0
