"""The ``cure`` command: a subcommand per stage, plus run / compile / submit.

Each subcommand lives in the module that implements its stage. The module exposes
``configure_parser(parser)`` (its own flags) and ``run_cli(args, cfg) -> int``; this file only routes, so the
command starts fast and a stage's heavy imports (torch, vllm, kfp) happen only when that stage runs.
Every subcommand also takes ``--config FILE`` and ``--set section.field=value`` (see :mod:`cure.config`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Nested commands use "group name".
COMMANDS: dict[str, tuple[str, str]] = {
    "data prepare": ("cure.data", "Prepare tasks (file, hf, humaneval, synthetic) -> tasks.jsonl"),
    "rollout": ("cure.rollout.stage", "Sample programs and unit tests per task -> rollouts.jsonl"),
    "execute": ("cure.execute", "Run every program on every test in the sandbox -> executions.jsonl"),
    "reward": ("cure.reward_stage", "CURE rewards from pass tables -> rewards.jsonl"),
    "train": ("cure.train.stage", "One policy-gradient step on the reward data -> checkpoint"),
    "evaluate": ("cure.evaluate", "Code / unit-test accuracy, p01/p00, Best-of-N -> metrics"),
    "model tiny": ("cure.tiny", "Build the offline tiny base model (tokenizer + warm start)"),
    "run": ("cure.local_run", "Run the training pipeline locally through kfp.local"),
    "compile": ("cure.kfp_compile", "Compile the pipelines to YAML for the Kubeflow UI"),
    "submit": ("cure.kfp_compile", "Submit a compiled pipeline to a Kubeflow Pipelines endpoint"),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file (sections of cure.config.CureConfig)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set train.learning_rate=1e-5 (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _top_parser() -> argparse.ArgumentParser:
    groups: dict[str, list[str]] = {}
    for name in COMMANDS:
        head = name.split()[0]
        groups.setdefault(head, []).append(name)
    lines = [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    return argparse.ArgumentParser(
        prog="cure",
        description="CURE: co-evolving an LLM coder and unit tester with RL, as a Kubeflow pipeline.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun `cure COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _resolve(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """Find the longest command name that prefixes argv."""
    for width in (2, 1):
        name = " ".join(argv[:width])
        if len(argv) >= width and name in COMMANDS:
            return name, list(argv[width:])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    found = _resolve(argv)
    if found is None:
        if not argv or argv[0] in ("-h", "--help"):
            top.print_help()
            return 0
        groups = {n.split()[0] for n in COMMANDS if " " in n}
        if argv[0] in groups:
            subs = ", ".join(n for n in COMMANDS if n.startswith(argv[0] + " "))
            top.error(f"'{argv[0]}' needs a subcommand: {subs}")
        top.error(f"unknown command {' '.join(argv[:1])!r}; see `cure --help`")
    name, rest = found
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"cure {name}", description=help_)
    _add_common(parser)
    configure = getattr(module, "configure_parser_" + name.split()[-1], None) or module.configure_parser
    configure(parser)
    args = parser.parse_args(rest)
    args.command = name
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from cure.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        parser.error(str(e))
    run = getattr(module, "run_cli_" + name.split()[-1], None) or module.run_cli
    try:
        return int(run(args, cfg) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
