"""Components that need no torch must not import it: every pipeline step is a fresh process, so an import of
torch/transformers costs seconds per step per round. Heavy imports stay inside the functions that need them."""

from __future__ import annotations

import subprocess
import sys

LIGHT = ["cure.stages", "cure.store", "cure.metrics", "cure.reward_stage", "cure.reward", "cure.execute", "cure.data",
         "cure.report", "cure.console", "cure.config", "cure.tasks", "cure_pipelines.local_run", "cure.tiny"]
HEAVY = ["torch", "transformers", "deepspeed", "vllm", "matplotlib"]


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {LIGHT!r}: importlib.import_module(m)\n"
        f"print(','.join(h for h in {HEAVY!r} if h in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {LIGHT} also imported {out}: move that import into the function that needs it"
