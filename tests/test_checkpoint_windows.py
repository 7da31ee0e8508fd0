"""Checkpoint saves are atomic in every window: a process killed (SIGKILL) before each filesystem step of a save
leaves ``latest`` resolving to a complete checkpoint (the old one or the new one), and the next save repairs
and cleans up. Also: a step is never overwritten unless asked, and non-finite weights are never written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cure.train import checkpoint as ckpt

# A stand-in engine: save_checkpoint only needs full_state_dict(), model.save_pretrained and a tokenizer, so the
# child process runs without torch and each kill costs a fraction of a second.
FAKE = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    from pathlib import Path

    class Model:
        def __init__(self, tag): self.tag = tag
        def save_pretrained(self, folder, state_dict=None, safe_serialization=True):
            (Path(folder) / "config.json").write_text("{}")
            (Path(folder) / "weights.txt").write_text(self.tag)

    class Engine:
        def __init__(self, tag): self.model = Model(tag)
        def full_state_dict(self): return None

    class Tok:
        def save_pretrained(self, folder): (Path(folder) / "tokenizer.json").write_text("{}")
    """
)

CHILD = FAKE + textwrap.dedent(
    """
    from cure.train import checkpoint as ckpt
    root, step, tag, kill_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    calls = 0
    def killing(fn):
        def wrapper(*a, **k):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapper
    for mod, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree")):
        setattr(mod, name, killing(getattr(mod, name)))
    ckpt.save_checkpoint(Engine(tag), Tok(), root, {"step": step, "updates": step}, overwrite=True)
    print(json.dumps({"calls": calls}))
    """
)


def _save(root: Path, step: int, tag: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(root), str(step), tag, str(kill_at)],
                          capture_output=True, text=True, timeout=60)


def _content(root: Path) -> str:
    folder = ckpt.latest_checkpoint(root)
    assert folder is not None and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    return (folder / "weights.txt").read_text()


def _no_leftovers(root: Path) -> None:
    assert not [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def _count_calls(tmp_path: Path, resave: bool) -> int:
    root = tmp_path / "count"
    assert _save(root, 1, "old").returncode == 0
    done = _save(root, 1 if resave else 2, "new")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["calls"]


@pytest.mark.parametrize("resave", [True, False], ids=["resave-same-step", "next-step"])
def test_killed_at_every_point_of_a_save(tmp_path, resave):
    n = _count_calls(tmp_path, resave)
    assert n >= (3 if resave else 2)  # renames, the pointer's replace, the clean-up
    step = 1 if resave else 2
    for kill_at in range(1, n + 1):
        root = tmp_path / f"kill-{kill_at}"
        assert _save(root, 1, "old").returncode == 0
        killed = _save(root, step, "new", kill_at)
        assert killed.returncode == -9, (kill_at, killed.stdout, killed.stderr)
        assert _content(root) in ("old", "new"), kill_at  # latest always resolves to a complete checkpoint
        # The next save (another re-save of the same step) repairs, succeeds and leaves nothing behind.
        again = _save(root, step, "again")
        assert again.returncode == 0, (kill_at, again.stderr)
        assert _content(root) == "again" and (root / "latest").read_text().strip() == ckpt.step_name(step)
        _no_leftovers(root)


def test_a_crash_between_the_renames_falls_back_to_the_old_copy(tmp_path):
    root = tmp_path / "root"
    assert _save(root, 1, "old").returncode == 0
    # Kill at the 2nd call of a re-save: after step-000001 moved to .old-step-000001, before the new one is in.
    killed = _save(root, 1, "new", kill_at=2)
    assert killed.returncode == -9
    assert not (root / "step-000001").exists() and (root / ".old-step-000001").is_dir()
    assert _content(root) == "old"
    assert ckpt.resolve_model_dir(root) == root / ".old-step-000001"


def test_a_step_is_not_overwritten_unless_asked(tmp_path):
    exec(FAKE, ns := {})
    root = tmp_path / "root"
    ckpt.save_checkpoint(ns["Engine"]("one"), ns["Tok"](), root, {"step": 1, "updates": 1})
    with pytest.raises(ckpt.StepExists, match="--overwrite"):
        ckpt.save_checkpoint(ns["Engine"]("two"), ns["Tok"](), root, {"step": 1, "updates": 1})
    assert _content(root) == "one"
    ckpt.save_checkpoint(ns["Engine"]("two"), ns["Tok"](), root, {"step": 1, "updates": 1}, overwrite=True)
    assert _content(root) == "two"
    _no_leftovers(root)


def test_non_finite_weights_are_never_written(tmp_path):
    import torch

    exec(FAKE, ns := {})
    root = tmp_path / "root"
    ckpt.save_checkpoint(ns["Engine"]("good"), ns["Tok"](), root, {"step": 1, "updates": 1})

    class NaNEngine(ns["Engine"]):
        def full_state_dict(self):
            return {"w": torch.tensor([1.0, float("nan")]), "ids": torch.tensor([1, 2])}

    for value in (float("nan"), float("inf")):
        eng = NaNEngine("bad")
        eng.full_state_dict = lambda v=value: {"w": torch.tensor([1.0, v])}
        with pytest.raises(ckpt.NonFiniteWeights, match="NaN or infinity"):
            ckpt.save_checkpoint(eng, ns["Tok"](), root, {"step": 2, "updates": 2})
    assert _content(root) == "good" and not (root / "step-000002").exists()
    _no_leftovers(root)
