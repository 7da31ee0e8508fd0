"""``cure rollout``: k_code programs and k_test unit tests per task -> rollouts.jsonl (:mod:`cure.rollout.stage`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cure.config import CureConfig
from cure.prompts import PromptTemplates
from cure.rollout.engine import ENGINES
from cure.rollout.stage import default_prompt_dir, rollout_tasks, shard, summarize
from cure_cli.flags import apply_config_flags, config_flag

log = logging.getLogger("cure.rollout")

# The flags that set one field of the rollout config (type, choices and help from the config).
CONFIG_FLAGS = ("rollout.engine", "rollout.k_code", "rollout.k_test", "rollout.seed", "rollout.max_new_tokens",
                "rollout.temperature", "rollout.batch_size", "rollout.prompt_dir")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", required=True, help="tasks.jsonl (CURE's Stdio task format)")
    parser.add_argument("--out", required=True, help="rollouts.jsonl to write (atomically)")
    parser.add_argument("--model", help="coder model: a folder or hub name (hf, vllm), or the API's model name (openai); default model.path")
    config_flag(parser, "rollout.engine", help="coder engine (default rollout.engine)")
    parser.add_argument("--tester-model", help="tester model (default: the coder's)")
    parser.add_argument("--tester-engine", choices=ENGINES, help="tester engine (default: the coder's)")
    parser.add_argument("--tokenizer", help="policy tokenizer for the recorded prompts and lengths "
                        "(default: the first local model among coder, tester)")
    for key in CONFIG_FLAGS[1:]:
        config_flag(parser, key)
    parser.add_argument("--give-example", choices=["draw", "always", "never"], default="draw",
                        help="public example in the tester prompt: drawn with rollout.p_give_example (default), always, never")
    parser.add_argument("--limit", type=int, help="only the first N tasks (smoke runs)")
    parser.add_argument("--shard", metavar="K/N", help="only the K-th (0-based) of N contiguous slices of the tasks: "
                        "data parallelism across pods; concatenating the N outputs in order gives the full artifact")


def _apply_flags(args: argparse.Namespace, cfg: CureConfig) -> None:
    apply_config_flags(args, cfg, CONFIG_FLAGS)
    if args.model:
        cfg.model.path = args.model


def _is_local(engine: str, model: str) -> bool:
    return engine != "openai" or Path(model).is_dir()








def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    from transformers import AutoTokenizer

    from cure.rollout.openai_engine import ApiError
    from cure.rollout.registry import make_engine
    from cure.tasks import TaskFormatError, load_tasks, write_jsonl

    _apply_flags(args, cfg)
    rc = cfg.rollout
    coder_model, coder_kind = cfg.model.path, rc.engine
    tester_model = args.tester_model or cfg.reward.tester_model or coder_model
    tester_kind = args.tester_engine or cfg.reward.tester_engine or coder_kind
    local = [m for m, k in ((coder_model, coder_kind), (tester_model, tester_kind)) if _is_local(k, m)]
    tok_path = args.tokenizer or (local[0] if local else None)
    if tok_path is None:
        raise SystemExit("cure rollout: both engines are remote (openai): pass --tokenizer DIR (the policy's) "
                         "to render the recorded prompts and count response lengths")
    if rc.prompt_dir is None:
        rc.prompt_dir = default_prompt_dir(*local)
        if rc.prompt_dir:
            log.info("using the model's prompt templates in %s", rc.prompt_dir)

    from cure.validate import CliError, check_output_path

    if args.limit is not None and args.limit < 0:
        raise CliError(f"--limit {args.limit}: must be 0 or more (the number of tasks to keep)")
    check_output_path(args.out)
    try:
        tasks, _ = load_tasks(args.tasks)
        if args.limit is not None:
            tasks = tasks[: args.limit]
        if args.shard:
            tasks = shard(tasks, args.shard)
    except (TaskFormatError, ValueError) as e:
        raise CliError(str(e)) from e
    give = {"draw": None, "always": True, "never": False}[args.give_example]
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
        coder = make_engine(coder_kind, coder_model, rc)
        try:
            same = tester_kind == coder_kind and tester_model == coder_model
            tester = coder if same else make_engine(tester_kind, tester_model, rc)
            try:
                records = rollout_tasks(tasks, coder, tester, cfg, tokenizer, PromptTemplates.load(rc.prompt_dir), give)
            finally:
                if tester is not coder:
                    tester.close()
        finally:
            coder.close()
    except (ApiError, ImportError, OSError) as e:  # their messages say what to check; no traceback needed
        log.error("cure rollout: %s", e)
        return 1
    if cfg.reward.tester_model and not args.tester_model:
        for rec in records:  # provenance: the reward stage trains no tester rows on a frozen tester's tests
            rec["tester_model"] = cfg.reward.tester_model
    n = write_jsonl(args.out, records)
    stats = summarize(records)
    log.info("wrote %d rollout records to %s: %s", n, args.out, ", ".join(f"{k}={v}" for k, v in stats.items()))
    return 0
