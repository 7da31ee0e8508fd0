"""Flags generated from the config (cure_cli.flags): type, choices and help come from CureConfig's fields."""

from __future__ import annotations

import argparse

import pytest

from cure.config import CureConfig
from cure_cli import main
from cure_cli.flags import apply_config_flags, config_flag


def test_a_config_flag_takes_the_fields_type_choices_and_help() -> None:
    p = argparse.ArgumentParser()
    for key in ("rollout.k_code", "rollout.temperature", "train.engine", "rollout.prompt_dir"):
        config_flag(p, key)
    by_flag = {a.option_strings[0]: a for a in p._actions if a.option_strings}
    assert by_flag["--k-code"].type is int and by_flag["--temperature"].type is float
    assert by_flag["--engine"].choices == ["deepspeed", "torch"]
    assert by_flag["--prompt-dir"].type is None
    assert "Programs sampled per task (paper: 16)" in by_flag["--k-code"].help
    args = p.parse_args(["--k-code", "3", "--engine", "torch"])
    cfg = CureConfig()
    apply_config_flags(args, cfg, ("rollout.k_code", "rollout.temperature", "train.engine", "rollout.prompt_dir"))
    assert (cfg.rollout.k_code, cfg.train.engine, cfg.rollout.temperature) == (3, "torch", 1.0)  # unset: the config's


@pytest.mark.parametrize("argv", [["execute", "--rollouts", "r", "--out", "o", "--isolation", "chroot"],
                                  ["train", "--model", "m", "--data", "d", "--out", "o", "--layout", "ragged"],
                                  ["rollout", "--tasks", "t", "--out", "o", "--k-code", "many"]])
def test_a_value_the_config_field_refuses_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "invalid" in capsys.readouterr().err
