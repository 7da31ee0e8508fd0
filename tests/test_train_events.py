"""cure.train.events: the train stage's TensorBoard scalars, written without importing TensorBoard (checked against
TensorBoard's own writer and reader)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import make_records, tiny_model  # noqa: F401  (tiny_model is a session fixture)

from cure.train.events import ScalarWriter, crc32c, masked_crc32c

SCALARS = [("train/loss", 0.125, 0), ("train/loss", -3.5e-3, 1), ("train/kl", 1e-7, 7), ("train/grad_norm", 42.0, 123456)]


def _records(path: Path) -> list[bytes]:
    data, out = path.read_bytes(), []
    while data:
        (n,) = struct.unpack("<Q", data[:8])
        assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
        body = data[12 : 12 + n]
        assert struct.unpack("<I", data[12 + n : 16 + n])[0] == masked_crc32c(body)
        out.append(body)
        data = data[16 + n :]
    return out


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
    assert crc32c(b"") == 0


def test_the_same_event_records_as_tensorboards_writer(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    ours = ScalarWriter(tmp_path / "ours")
    theirs = SummaryWriter(log_dir=str(tmp_path / "theirs"))
    for i, (tag, value, step) in enumerate(SCALARS):
        ours.add_scalar(tag, value, step, walltime=1_700_000_000.5 + i)
        theirs.add_scalar(tag, value, step, walltime=1_700_000_000.5 + i)
    ours.close()
    theirs.close()
    [ours_file] = (tmp_path / "ours").glob("events.out.tfevents.*")
    [theirs_file] = (tmp_path / "theirs").glob("events.out.tfevents.*")
    a, b = _records(ours_file), _records(theirs_file)
    assert a[1:] == b[1:]  # every scalar event byte for byte
    # The file version event: its wall time differs; TensorBoard's also names its writer (source_metadata, field 10).
    assert a[0][9:] == b"\x1a\x0dbrain.Event:2" and b[0][9:].startswith(a[0][9:])


def test_tensorboard_reads_the_scalars_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = ScalarWriter(tmp_path)
    for tag, value, step in SCALARS:
        writer.add_scalar(tag, value, step)
    writer.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["train/grad_norm", "train/kl", "train/loss"]
    loss = acc.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(0, 0.125), (1, pytest.approx(-3.5e-3))]
    assert [(e.step, e.value) for e in acc.Scalars("train/grad_norm")] == [(123456, 42.0)]


def test_a_training_step_does_not_import_tensorboard(tiny_model, tmp_path: Path) -> None:  # noqa: F811
    from cure.tasks import write_jsonl

    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, make_records(6))
    code = (
        "import sys, json; from cure.config import TrainConfig; from cure.tasks import read_jsonl; "
        "from cure.train.stage import train_step; "
        "cfg = TrainConfig(engine='torch', prompt_max_len=48, generate_max_len=48, packing_max_len=120, "
        "micro_batch_tokens=120, gradient_checkpointing=False); "
        f"m = train_step({str(tiny_model)!r}, read_jsonl({str(data)!r}), cfg, {str(tmp_path / 'out')!r}); "
        "print(json.dumps([m['updates'], 'tensorboard' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    updates, tensorboard = json.loads(out.strip().splitlines()[-1])
    assert updates > 0 and not tensorboard
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))
