"""Checkpoints: Hugging Face ``save_pretrained`` folders, written so that a crash never damages the last good one.

Layout of a checkpoint root (the stage's ``--out``)::

    OUT/step-000003/      config.json, model.safetensors, tokenizer files, trainer_state.json[, optimizer/]
    OUT/latest            "step-000003" (replaced atomically)

A step is written into ``OUT/.tmp-step-000003``, flushed, renamed to ``OUT/step-000003``, and only then does
``latest`` move (``os.replace`` of a small file). A crash at any point leaves ``latest`` resolving to a complete
folder. Re-saving an existing step (only with ``overwrite=True``; otherwise it is refused) moves the old folder
to ``OUT/.old-step-000003`` before the new one is renamed in: a crash between those two renames leaves ``latest``
naming a missing folder whose complete ``.old-`` copy :func:`latest_checkpoint` falls back to, and the next save
puts it back. Leftover ``.tmp-*``/``.old-*`` folders are removed once ``latest`` names the new step. A checkpoint
whose weights hold a NaN or an infinity is never written (:class:`NonFiniteWeights`). :func:`resolve_model_dir` turns a root into the folder ``latest`` names (and passes a plain
``save_pretrained`` folder through), so ``from_pretrained(resolve_model_dir(OUT))`` loads the newest weights.

Under ZeRO-3 the weights are gathered parameter by parameter onto rank 0 before saving (every rank takes part).
``trainer_state.json`` carries the step and update counters that ``resume_from`` continues from; the optimizer
state is saved only when asked (``TrainConfig.save_optimizer_state``): the reference starts each step with a
fresh AdamW.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

LATEST = "latest"
STATE_FILE = "trainer_state.json"
OPTIMIZER_DIR = "optimizer"


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``root/latest`` names, or None when the root has no complete checkpoint yet."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    target = root / name
    if (target / "config.json").is_file():
        return target
    if (root / f".old-{name}" / "config.json").is_file():
        return root / f".old-{name}"  # a re-save of this step crashed between its two renames
    raise FileNotFoundError(f"{pointer} names {target.name}, which has no config.json; the checkpoint root is damaged")


def resolve_model_dir(path: str | Path) -> Path:
    """A loadable model folder: the latest checkpoint of a checkpoint root, or ``path`` itself."""
    path = Path(path)
    found = latest_checkpoint(path) if path.is_dir() else None
    return found if found is not None else path


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (root or step folder); zero counters for a model we did not train."""
    folder = resolve_model_dir(path)
    state_file = folder / STATE_FILE
    if not state_file.is_file():
        return {"step": 0, "updates": 0}
    state = json.loads(state_file.read_text())
    for key in ("step", "updates"):
        if not isinstance(state.get(key), int):
            raise ValueError(f"{state_file}: field {key!r} must be an integer (got {state.get(key)!r})")
    return state


def _fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _barrier() -> None:
    dist = sys.modules.get("torch.distributed")  # not imported: no process group exists to wait for
    if dist is not None and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def write_latest(root: Path, name: str) -> None:
    """Point ``root/latest`` at ``name`` atomically."""
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)


class NonFiniteWeights(ValueError):
    """The weights to be saved hold NaN or infinite values; nothing was written."""


class StepExists(FileExistsError):
    """``root/step-N`` exists and overwriting it was not asked for."""


def check_step_free(root: str | Path, step: int, overwrite: bool) -> None:
    """Raise :class:`StepExists` when ``root/step-N`` exists and ``overwrite`` is false (call before training)."""
    final = Path(root) / step_name(step)
    if final.exists() and not overwrite:
        raise StepExists(
            f"{final} already exists; continue from it (--model {root}), choose another --out, or pass "
            "--overwrite to replace it"
        )


def nonfinite_tensors(weights: dict[str, Any]) -> list[str]:
    """Names of the tensors that hold a NaN or an infinity."""
    import torch

    return [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def repair(root: Path) -> None:
    """Undo a re-save that crashed between its renames: put ``.old-<latest>`` back under its name."""
    pointer = root / LATEST
    if not pointer.is_file():
        return
    name = pointer.read_text().strip()
    old = root / f".old-{name}"
    if name and not (root / name).exists() and (old / "config.json").is_file():
        os.rename(old, root / name)
        _fsync_dir(root)


def _clean_leftovers(root: Path, keep: set[str]) -> None:
    for p in root.iterdir():
        if p.name.startswith((".tmp-step-", ".old-step-")) and p.name not in keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    engine: Any,
    tokenizer: Any,
    root: str | Path,
    state: dict[str, Any],
    *,
    save_optimizer: bool = False,
    is_main: bool = True,
    overwrite: bool = False,
) -> Path:
    """Save the engine's model (+ tokenizer, trainer state, optionally optimizer) as ``root/step-N``.

    Collective: every rank must call it (ZeRO-3 gathers weights, DeepSpeed writes optimizer shards).
    Returns the final folder. Raises :class:`StepExists` if the step exists and not ``overwrite``, and
    :class:`NonFiniteWeights` (writing nothing) if a weight is NaN or infinite.
    """
    root = Path(root)
    name = step_name(int(state["step"]))
    tmp = root / f".tmp-{name}"
    final = root / name
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        repair(root)
        check_step_free(root, int(state["step"]), overwrite)
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash mid-write
    _barrier()
    weights = engine.full_state_dict()
    if is_main:
        bad = nonfinite_tensors(weights) if weights is not None else []
        if bad:
            raise NonFiniteWeights(
                f"refusing to save {final}: {len(bad)} weight tensor(s) hold NaN or infinity (e.g. {bad[0]}); "
                f"{root / LATEST} still names the last good checkpoint"
            )
        tmp.mkdir()
        engine.model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    if save_optimizer:
        _barrier()
        engine.save_optimizer(tmp / OPTIMIZER_DIR)
    _barrier()
    if is_main:
        _fsync_tree(tmp)
        if final.exists():
            trash = root / f".old-{name}"
            if trash.exists():
                shutil.rmtree(trash)
            os.rename(final, trash)
        os.rename(tmp, final)
        _fsync_dir(root)
        write_latest(root, name)
        _clean_leftovers(root, keep=set())
    _barrier()
    return final


def has_optimizer_state(folder: str | Path) -> bool:
    return (Path(folder) / OPTIMIZER_DIR).is_dir()
