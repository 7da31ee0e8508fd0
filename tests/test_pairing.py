"""Pairing: one model writes the programs, another the tests (``cure evaluate --coder-model``)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import cure
from cure.config import CureConfig, load_config
from cure.pairing import pair_tasks, to_markdown
from cure.prompts import PromptTemplates
from cure.rollout.engine import Completion, Engine, SamplingParams
from cure.tasks import Task, write_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from rollout_fixtures import build_fixture_model  # noqa: E402
from train_fixtures import build_tiny_model  # noqa: E402


class WordTokenizer:
    chat_template = None

    @staticmethod
    def encode(text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


class RoleEngine(Engine):
    """Answers coder prompts and tester prompts from two fixed lists, cycling over ``n``."""

    def __init__(self, programs: list[str], tests: list[str]) -> None:
        self.programs, self.tests, self.calls = programs, tests, []

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            is_test = "**Test Input:**" in p
            self.calls.append("test" if is_test else "code")
            src = self.tests if is_test else self.programs
            out.append([Completion(src[j % len(src)], 1, "stop") for j in range(params.n)])
        return out


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def unit_test(i: str, o: str) -> str:
    return f"**Test Input:**\n```{i}```\n\n**Test Output:**\n```{o}```\n"


TASK = Task(task_id="inc", source="unit", question="Read an integer and print it plus one.",
            example_input=["1\n"], example_output=["2\n"], test_input=["1\n", "7\n"], test_output=["2\n", "8\n"])


def config(**eval_fields) -> CureConfig:
    cfg = load_config(None, ["execute.workers=2"])
    cfg.eval.k_code, cfg.eval.k_test, cfg.eval.scales = 4, 2, [(4, 2), (2, 1)]
    for k, v in eval_fields.items():
        setattr(cfg.eval, k, v)
    return cfg


def test_paired_tester_picks_the_correct_program_where_the_coders_own_tests_do_not():
    # Programs: +2 (wrong), +1 (right), *2 (wrong), +1 (right). The coder's own test agrees with its +2 program;
    # the tester's test is right. In the sandbox (gVisor).
    coder = RoleEngine([fenced("print(int(input()) + 2)"), fenced("print(int(input()) + 1)"),
                        fenced("print(int(input()) * 2)"), fenced("n = int(input())\nprint(n + 1)")],
                       [unit_test("5", "7")])
    tester = RoleEngine(["never asked"], [unit_test("5", "6")])
    report, rollouts, executions = pair_tasks([TASK], coder, tester, config(), WordTokenizer())
    assert "code" not in tester.calls and coder.calls == ["code", "test"]
    assert report["code_acc"] == 0.5
    assert [(s["programs"], s["tests"], s["bon_paired"], s["bon_own"]) for s in report["scales"]] == [
        (4, 2, 1.0, 0.0), (2, 1, 1.0, 0.0)]
    assert report["tester_unit_test_acc"] == 1.0 and report["coder_unit_test_acc"] == 0.0
    # Columns: 2 ground-truth tests, then the tester's 2, then the coder's 2.
    assert executions[0]["num_gt"] == 2 and len(executions[0]["passed"][0]) == 6
    assert executions[0]["passed"][0] == [False, False, False, False, True, True]
    t = report["tokens"]
    assert t["coder_programs"] == sum(len(x.split()) for x in rollouts[0]["code_responses"])
    assert t["coder_tests"] == t["tester_tests"] == 2 * len(unit_test("5", "6").split())
    assert report["coder_api_tokens"]["own"] - report["coder_api_tokens"]["paired"] == t["coder_tests"]
    md = to_markdown("unit", report, "coder", "tester")
    assert "| 4 x 2 | 1.000 | 0.000 | +1.000 |" in md


def test_pairing_two_different_local_models(tmp_path: Path):
    """Coder and tester are two different small local models (hf engine): each role's responses are that model's."""
    from cure.prompts import code_prompt, test_prompt
    from cure.rollout.hf import HFEngine
    from cure.rollout.stage import _render_for
    from cure_cli.evaluate import configure as configure_parser
    from cure_cli.evaluate import run as run_cli

    coder_dir = build_fixture_model(tmp_path / "coder")
    tester_dir = build_tiny_model(tmp_path / "tester")
    shutil.copytree(Path(cure.__file__).parent / "templates" / "tiny", tester_dir / "prompts")  # short prompts
    templates = PromptTemplates.load(tester_dir / "prompts")
    write_jsonl(tmp_path / "tasks.jsonl", [TASK])
    import argparse

    p = argparse.ArgumentParser()
    configure_parser(p)
    args = p.parse_args(["--model", str(tester_dir), "--coder-model", str(coder_dir), "--coder-engine", "hf",
                         "--engine", "hf", "--tasks", f"unit={tmp_path / 'tasks.jsonl'}", "--out", str(tmp_path / "out")])
    cfg = load_config(None, ["eval.k_code=2", "eval.k_test=2", "eval.temperature=0", "rollout.max_new_tokens=12",
                             "eval.scales=[[2, 2], [1, 1]]", "execute.workers=1"])
    assert run_cli(args, cfg) == 0
    result = json.loads((tmp_path / "out" / "pairing.json").read_text())
    assert result["coder_model"] == str(coder_dir) and result["tester_model"] == str(tester_dir)
    report = result["benchmarks"]["unit"][0]
    assert [(s["programs"], s["tests"]) for s in report["scales"]] == [(2, 2), (1, 1)]
    assert "Pairing on `unit`" in (tmp_path / "out" / "pairing.md").read_text()
    rec = json.loads((tmp_path / "out" / "unit.pairing.rollouts.jsonl").read_text().splitlines()[0])
    # Greedy decoding: each response is what its own model writes for that prompt.
    greedy = SamplingParams(n=1, temperature=0, max_new_tokens=12, stop=cfg.rollout.stop)
    coder, tester = HFEngine(str(coder_dir), cfg.rollout), HFEngine(str(tester_dir), cfg.rollout)
    q = TASK.question
    assert rec["code_responses"][0] == coder.generate([_render_for(coder, lambda t, _: code_prompt(q, t, templates, "reference", "evaluation"), None)], greedy)[0][0].text
    assert rec["test_responses"][0] == tester.generate([_render_for(tester, lambda t, _: test_prompt(q, [], [], t, templates, "reference"), None)], greedy)[0][0].text
    assert rec["coder_test_responses"][0] == coder.generate([_render_for(coder, lambda t, _: test_prompt(q, [], [], t, templates, "reference"), None)], greedy)[0][0].text
    assert rec["test_responses"][0] != rec["coder_test_responses"][0]


def test_unknown_coder_engine_is_refused():
    import argparse

    from cure_cli.evaluate import configure as configure_parser

    p = argparse.ArgumentParser()
    configure_parser(p)
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m", "--coder-model", "c", "--coder-engine", "tgi", "--tasks", "x", "--out", "o"])


def test_evaluation_pipeline_pairs_with_a_coder_whose_key_comes_from_a_secret(tmp_path: Path):
    import yaml
    from cure_pipelines.training import build_eval_pipeline
    from kfp import compiler

    compiler.Compiler().compile(build_eval_pipeline(gpus=0, api_key_secret="my-key"), str(tmp_path / "e.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "e.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["coder_model"]["defaultValue"] == "" and params["coder_engine"]["defaultValue"] == "openai"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    env = [e for e in executors["exec-evaluate-pairing"]["secretAsEnv"] if e["secretName"] == "my-key"]
    assert env and env[0]["keyToEnv"] == [{"envVar": "OPENAI_API_KEY", "secretKey": "api_key"}]
    # Only the pairing pod gets the key (others get at most the store's Secret); the self-evaluation runs when no
    # coder is given.
    with_key = [name for name, ex in executors.items() if any(e["secretName"] == "my-key" for e in ex.get("secretAsEnv", []))]
    assert with_key == ["exec-evaluate-pairing"]
    text = (tmp_path / "e.yaml").read_text()
    assert "exec-evaluate:" in text and text.count("condition: ") == 2  # self-evaluation if no coder, else pairing


def test_seed_summary_gives_mean_and_spread_per_scale():
    from cure.pairing import seed_summary

    runs = [{"scales": [{"programs": 4, "tests": 4, "bon_paired": p, "bon_own": o, "gain": p - o}]}
            for p, o in ((0.5, 0.25), (0.75, 0.25), (0.25, 0.5))]
    (row,) = seed_summary(runs)
    assert row["seeds"] == 3 and row["bon_paired"] == {"mean": 0.5, "spread": 0.5}
    assert row["gain"]["mean"] == pytest.approx((0.25 + 0.5 - 0.25) / 3) and row["gain"]["spread"] == 0.75
