"""The ``cure`` command: routes ``cure NAME ...`` to the command's module in this package.

Each command is a module here exposing ``configure(parser)`` (its flags) and ``run(args, cfg) -> int``; a module with
several commands (``cure store repair|unlock``) names them ``configure_repair`` / ``run_repair``. This file only
routes, so the command starts fast and a command's heavy imports (torch, vllm, kfp) happen only when it runs.
Every command also takes ``--config FILE`` and ``--set section.field=value`` (see :mod:`cure.config`).
The package sits above the pipelines (``cure_pipelines``), which sit above their components and the library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

# name -> (module, one-line help). Nested commands use "group name".
COMMANDS: dict[str, tuple[str, str]] = {
    "data prepare": ("cure_cli.data", "Prepare tasks (file, hf, humaneval, synthetic) -> tasks.jsonl"),
    "rollout": ("cure_cli.rollout", "Sample programs and unit tests per task -> rollouts.jsonl"),
    "execute": ("cure_cli.execute", "Run every program on every test in the sandbox -> executions.jsonl"),
    "reward": ("cure_cli.reward", "CURE rewards from pass tables -> rewards.jsonl"),
    "train": ("cure_cli.train", "One policy-gradient step on the reward data -> checkpoint"),
    "evaluate": ("cure_cli.evaluate", "Code / unit-test accuracy, p01/p00, Best-of-N -> metrics"),
    "model tiny": ("cure_cli.model", "Build the offline tiny base model (tokenizer + warm start)"),
    "run": ("cure_cli.run", "Run the training pipeline locally through kfp.local"),
    "store repair": ("cure_cli.store", "Point an experiment's lost or damaged `latest` at its newest complete checkpoint"),
    "store unlock": ("cure_cli.store", "Clear an experiment's lease left by a run that is gone"),
    "compile": ("cure_cli.compile", "Compile the pipelines to YAML for the Kubeflow UI"),
    "submit": ("cure_cli.submit", "Submit a compiled pipeline to a Kubeflow Pipelines endpoint"),
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
    # OpenMP threads spin only briefly at the end of a parallel region before they sleep. With every core busy (a
    # 2-core machine running anything else), threads spinning for long take the CPU from the one still working: a
    # tiny-model build step took 0.94 s with 2 threads at load 7 against 0.25 s with 1. bench/bench_tiny.py, 2 threads,
    # bfloat16 step: idle, libgomp's default 60 ms, this setting 65 ms, OMP_WAIT_POLICY=PASSIVE 91 ms; beside two
    # busy processes 180, 145 and 107 ms. Set before torch is imported; inherited by every component process of a
    # local run. An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")
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
    configure = getattr(module, "configure_" + name.split()[-1], None) or module.configure
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
    except ConfigError as e:  # one line per wrong field, without the usage text
        print(f"cure {name}: error: {e}", file=sys.stderr)
        return 2
    run = getattr(module, "run_" + name.split()[-1], None) or module.run
    previous = _terminate_on_sigterm()
    try:
        _apply_model_settings(args, cfg)
        return int(run(args, cfg) or 0)
    except KeyboardInterrupt as e:
        print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:  # one line for the user; -v shows the traceback
        code = 2 if _is_input_error(e) else 1
        if args.verbose:
            traceback.print_exc()
        what = "error" if code == 2 else f"error ({type(e).__name__})"
        print(f"cure {name}: {what}: {e}", file=sys.stderr)
        if code != 2 and not args.verbose:  # an unexpected error: the traceback is worth asking for
            print("(run with -v for the traceback)", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _apply_model_settings(args: argparse.Namespace, cfg: Any) -> None:
    """The settings the command's model folder asks for (``DIR/cure.json``), where the user set nothing."""
    from cure.model_settings import apply_model_settings

    model = getattr(args, "model", None) or cfg.model.path
    applied = apply_model_settings(cfg, model)
    if applied:
        logging.getLogger("cure").info("settings of the model in %s: %s", model, ", ".join(applied))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so ``with`` blocks (sandboxes, temp folders) clean up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _terminate_on_sigterm() -> Any:
    """Make SIGTERM unwind the stack (cleanup runs) instead of killing the process; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _is_input_error(e: BaseException) -> bool:
    """Errors the user can fix (bad input, missing or unwritable paths, a bad option): exit code 2."""
    from cure.validate import CliError

    if isinstance(e, (CliError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    from cure.store import StoreError

    return isinstance(e, StoreError) or type(e).__name__ == "GVisorUnavailable"


if __name__ == "__main__":
    sys.exit(main())
