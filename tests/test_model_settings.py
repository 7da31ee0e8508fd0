"""A model folder's ``cure.json``: the settings it was trained for, used wherever the user set nothing.

The shipped tiny model is trained on its chat template with tester prompts that never show the public example. With
the reference layout (the default) it wrote 16/16 programs but 0/16 extractable tests; its folder now says how it
wants to be prompted, so ``cure rollout --model <tiny> --engine hf`` needs no prompt options.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cure import synthetic
from cure.config import load_config
from cure.model_settings import SETTINGS_FILE, apply_model_settings, read_model_settings
from cure.tasks import read_jsonl, write_jsonl
from cure.tiny import MODEL_SETTINGS, SHIPPED_DIR
from cure_cli import main


def _folder(tmp_path: Path, settings: object) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / SETTINGS_FILE).write_text(settings if isinstance(settings, str) else json.dumps(settings))
    return d


def test_applied_where_the_user_set_nothing(tmp_path: Path) -> None:
    d = _folder(tmp_path, {"config": {"rollout": {"prompt_layout": "chat_template", "p_give_example": 0.0},
                                      "eval": {"k_code": 3}}})
    cfg = load_config(None, [])
    applied = apply_model_settings(cfg, d)
    assert sorted(applied) == ["eval.k_code=3", "rollout.p_give_example=0.0", "rollout.prompt_layout=chat_template"]
    assert cfg.rollout.prompt_layout == "chat_template" and cfg.rollout.p_give_example == 0.0 and cfg.eval.k_code == 3


def test_the_users_settings_win(tmp_path: Path) -> None:
    d = _folder(tmp_path, {"config": {"rollout": {"prompt_layout": "chat_template", "p_give_example": 0.0}}})
    # --set, even to the default value, is the user's choice
    cfg = load_config(None, ["rollout.prompt_layout=reference"])
    assert apply_model_settings(cfg, d) == ["rollout.p_give_example=0.0"]
    assert cfg.rollout.prompt_layout == "reference"
    # so is a config file
    (tmp_path / "c.yaml").write_text("rollout:\n  p_give_example: 0.5\n")
    cfg = load_config(tmp_path / "c.yaml", [])
    assert apply_model_settings(cfg, d) == ["rollout.prompt_layout=chat_template"]
    assert cfg.rollout.p_give_example == 0.5


def test_no_settings_for_a_hub_name_or_a_plain_folder(tmp_path: Path) -> None:
    cfg = load_config(None, [])
    assert apply_model_settings(cfg, "Qwen/Qwen2.5-7B-Instruct") == []
    assert apply_model_settings(cfg, tmp_path) == []
    assert cfg == load_config(None, [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"rollout": {"prompt_layout": "chat_template"}}, "expected"),
        ({"config": {"rolout": {"k_code": 1}}}, "config.rolout: not a config section"),
        ({"config": {"rollout": {"prompt_style": "chat"}}}, "config.rollout.prompt_style: no such field"),
        ({"config": {"rollout": {"p_give_example": 2}}}, "config.rollout.p_give_example"),
        ({"config": {"rollout": {"prompt_layout": "chat"}}}, "config.rollout.prompt_layout"),
    ],
)
def test_bad_settings_are_refused_naming_file_and_key(tmp_path: Path, content: object, message: str) -> None:
    d = _folder(tmp_path, content)
    with pytest.raises(ValueError, match=message) as e:
        read_model_settings(d)
    assert str(d / SETTINGS_FILE) in str(e.value)


def test_a_command_refuses_bad_settings_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _folder(tmp_path, {"config": {"rollout": {"p_give_example": "often"}}})
    rc = main(["rollout", "--model", str(d), "--tasks", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "r.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "cure.json: config.rollout.p_give_example" in err[0]
    assert not (tmp_path / "r.jsonl").exists()


def test_the_tiny_model_says_how_it_wants_to_be_prompted() -> None:
    assert json.loads((SHIPPED_DIR / SETTINGS_FILE).read_text()) == {"config": MODEL_SETTINGS}
    assert read_model_settings(SHIPPED_DIR) == MODEL_SETTINGS


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    write_jsonl(path, synthetic.generate_tasks(4, 1, "heldout"))
    return path


@pytest.mark.slow
def test_rollout_on_the_shipped_model_with_no_options_extracts_programs_and_tests(heldout: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollouts.jsonl"
    assert main(["rollout", "--model", str(SHIPPED_DIR), "--engine", "hf", "--tasks", str(heldout),
                 "--k-code", "4", "--k-test", "4", "--out", str(out)]) == 0
    records = read_jsonl(out)
    codes = [c for r in records for c in r["codes"]]
    tests = [t for r in records for t in r["tests"]]
    assert len(codes) == len(tests) == 16
    # With the reference layout this model extracted every program and no test; with its settings, nearly all of both.
    assert sum(c is not None for c in codes) >= 14
    assert sum(t is not None for t in tests) >= 14
    for r in records:
        assert r["test_prompt"].startswith("<|im_start|>system\n")  # its chat template
        assert "test samples" not in r["test_prompt"]  # no public example


def test_rollout_with_the_users_layout_uses_it(heldout: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollouts.jsonl"
    assert main(["rollout", "--model", str(SHIPPED_DIR), "--engine", "hf", "--tasks", str(heldout), "--limit", "1",
                 "--k-code", "1", "--k-test", "1", "--max-new-tokens", "4", "--out", str(out),
                 "--set", "rollout.prompt_layout=reference"]) == 0
    (record,) = read_jsonl(out)
    assert record["code_prompt"].startswith("<|im_start|>") and "<|im_start|>User:" in record["code_prompt"]


def test_a_trained_checkpoint_keeps_the_models_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's train step writes a checkpoint that asks for the same prompting as the model it started from."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from train_fixtures import build_tiny_model, make_records, small_train_config

    from cure.config import CureConfig
    from cure.stages import train

    model = build_tiny_model(tmp_path / "model")
    (model / SETTINGS_FILE).write_text(json.dumps({"config": MODEL_SETTINGS}))
    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, make_records(4))
    monkeypatch.chdir(tmp_path)
    m = train(str(model), str(data), CureConfig(train=small_train_config()), str(tmp_path / "out"), None, round_=0)
    assert m["examples"] == 4
    assert read_model_settings(tmp_path / "out") == MODEL_SETTINGS
