"""The transformers engine and the rollout stage, on a small random Qwen2 model built in the test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from cure.config import CureConfig, RolloutConfig
from cure.prompts import extract_code, extract_test
from cure.rollout.engine import Completion, Engine, SamplingParams, truncate_at_stop
from cure.rollout.hf import HFEngine
from cure.rollout.registry import make_engine
from cure.rollout.stage import rollout_tasks
from cure.tasks import Task, read_jsonl, write_jsonl
from cure_cli import main as cure_main

sys.path.insert(0, str(Path(__file__).parent))
from rollout_fixtures import build_fixture_model  # noqa: E402

PROMPTS = [
    "<|im_start|>user\nRead n and print n * 2.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nSum a list.<|im_end|>\n"
    "<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_model(tmp_path_factory.mktemp("fixture_model"))


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> HFEngine:
    return make_engine("hf", str(model_dir), RolloutConfig(engine="hf", batch_size=8))


def greedy(max_new: int = 24, stop: list[str] | None = None, n: int = 1) -> SamplingParams:
    return SamplingParams(n=n, temperature=0, max_new_tokens=max_new, stop=stop or [], seed=0)


def test_token_counts_are_the_reference_count_of_the_text(engine: HFEngine) -> None:
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, seed=3))
    assert [len(r) for r in out] == [4, 4, 4]
    for completions in out:
        for c in completions:
            assert c.num_tokens == len(engine.tokenizer.encode(c.text, add_special_tokens=False))
            assert c.finish_reason in ("stop", "length")


def test_stop_string_cuts_the_text_before_it(engine: HFEngine) -> None:
    sampled = SamplingParams(n=1, max_new_tokens=30, seed=11)
    full = engine.generate(PROMPTS[:1], sampled)[0][0]
    assert full.finish_reason == "length" and len(full.text) > 12
    stop = full.text[8:12]
    assert full.text.find(stop) > 0
    with_stop = SamplingParams(n=1, max_new_tokens=30, seed=11, stop=["never-there", stop])
    cut = engine.generate(PROMPTS[:1], with_stop)[0][0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.num_tokens < full.num_tokens


def test_stop_string_is_matched_in_the_response_only(engine: HFEngine) -> None:
    full = engine.generate(PROMPTS[:1], greedy(20))[0][0]
    # the prompt ends with "assistant\n": a stop string made of the prompt's end plus the response's start
    # must not fire (vLLM matches stop strings in the generated text only)
    spanning = "assistant\n" + full.text[:2]
    c = engine.generate(PROMPTS[:1], greedy(20, stop=[spanning]))[0][0]
    assert c.text == full.text


def test_end_of_sequence_token_ends_the_response(model_dir: Path, engine: HFEngine) -> None:
    tok = engine.tokenizer
    enc = tok(PROMPTS[:1], return_tensors="pt", add_special_tokens=False)
    row = engine.model.generate(**enc, do_sample=False, max_new_tokens=20, pad_token_id=tok.pad_token_id)[0]
    new = row[enc["input_ids"].shape[1] :].tolist()
    # declare the 6th generated token an end-of-sequence token: the response must stop right before it
    eos_tok = new[5]
    first = new.index(eos_tok)
    model = engine.model
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [old, eos_tok]
    try:
        special = HFEngine(str(model_dir), RolloutConfig(batch_size=4), model_obj=model, tokenizer_obj=tok)
        c = special.generate(PROMPTS[:1], greedy(20))[0][0]
    finally:
        model.generation_config.eos_token_id = old
    assert c.finish_reason == "stop"
    assert c.text == tok.decode(new[:first], skip_special_tokens=True)


def test_left_padding_does_not_change_greedy_output(model_dir: Path, engine: HFEngine) -> None:
    batched = engine.generate(PROMPTS, greedy(16))
    one_by_one = HFEngine(str(model_dir), RolloutConfig(batch_size=1)).generate(PROMPTS, greedy(16))
    assert [r[0].text for r in batched] == [r[0].text for r in one_by_one]


def test_sampling_is_seeded(engine: HFEngine) -> None:
    def texts(seed: int) -> list[list[str]]:
        out = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=12, seed=seed))
        return [[c.text for c in r] for r in out]

    assert texts(5) == texts(5)
    assert texts(5) != texts(6)
    samples = texts(5)
    assert len(set(samples[0])) > 1  # temperature 1: the n samples of a prompt differ


def test_truncate_at_stop_takes_the_earliest() -> None:
    assert truncate_at_stop("abc</answer>def User: x", ["User:", "</answer>"]) == ("abc", True)
    assert truncate_at_stop("abc", ["User:"]) == ("abc", False)
    assert truncate_at_stop("abc", [""]) == ("abc", False)


def test_unknown_engine_is_named() -> None:
    with pytest.raises(ValueError, match="unknown rollout engine 'tgi': choose one of hf, vllm, openai"):
        make_engine("tgi", "x", RolloutConfig())


# --- the stage ----------------------------------------------------------------------------------------------


class Scripted(Engine):
    """A test engine answering from a fixed list (per call) and recording what it was asked."""

    def __init__(self, answers: list[tuple[str, str]], chat: bool = False, tokenizer=None) -> None:
        self.answers, self.chat, self._tok, self.calls = answers, chat, tokenizer, []

    @property
    def tokenizer(self):
        return self._tok

    def generate(self, prompts, params):
        self.calls.append((prompts, params))
        pick = [self.answers[j % len(self.answers)] for j in range(params.n)]
        return [[Completion(text, 0, finish) for text, finish in pick] for _ in prompts]


def tasks(n: int = 3) -> list[Task]:
    return [
        Task(task_id=f"t{i}", source="unit", question=f"Print {i} plus the input.", test_time_limit=2.5,
             example_input=[f"{j}\n" for j in range(2)], example_output=[f"{j + i}\n" for j in range(2)],
             test_input=[f"{j}\n" for j in range(10)], test_output=[f"{j + i}\n" for j in range(10)])
        for i in range(n)
    ]


CODE_ANSWERS = [
    ("think first\n```python\nprint(int(input()) + 1)\n```", "stop"),
    ("no code here", "stop"),
    ("```python\nx = 1", "length"),
]
TEST_ANSWERS = [
    ("**Test Input:**\n```5```\n\n**Test Output:**\n```6```\n\n**Explanation:**\n\nadd one", "stop"),
    ("**Test Output:** only", "length"),
]


def test_rollout_records_extraction_lengths_and_truncation(engine: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.data.max_gt_tests = 3, 2, 4
    coder, tester = Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS, chat=True)
    records = rollout_tasks(tasks(), coder, tester, cfg, engine.tokenizer, give_example=True)
    assert len(records) == 3
    rec = records[0]
    assert rec["codes"] == [extract_code(t)[0] for t, _ in CODE_ANSWERS]
    assert rec["codes"][0] == "print(int(input()) + 1)" and rec["codes"][1:] == [None, None]
    assert rec["code_truncated"] == [False, False, True]
    assert rec["tests"] == [{"input": "5\n", "output": "6\n"}, None]
    assert rec["test_truncated"] == [False, True]
    assert rec["extract_failures"] == {"code": 2, "test": 1}
    assert sum(rec["extract_failure_reasons"]["code"].values()) == 2
    assert rec["extract_failure_reasons"]["test"] == {"no_test_input": 1}
    assert rec["code_lengths"] == [len(engine.tokenizer.encode(t, add_special_tokens=False)) for t, _ in CODE_ANSWERS]
    assert rec["gt_tests"] == [{"input": f"{j}\n", "output": f"{j}\n"} for j in range(4)]
    assert rec["time_limit_s"] == 1.0  # training: the reference's fixed 1 s, whatever the task says
    assert rec["typing_names"] is False
    # the tester (a chat API) got messages; the record keeps the prompt as the policy renders it (reference layout)
    prompts, params = tester.calls[0]
    assert isinstance(prompts[0], list) and [m["role"] for m in prompts[0]] == ["system", "user"]
    assert params.n == 2 and coder.calls[0][1].n == 3
    assert rec["test_prompt"].startswith("<|im_start|>You are a helpful assistant help user generate test examples")
    assert rec["test_prompt"].endswith("explanation here.\n <|im_end|>\n<|im_start|>Assistant: ")
    assert "Its input is '0\\n'. Its output is '0\\n'.\nYou need" in rec["test_prompt"]  # max_input_examples = 1
    # the coder (text in) got the reference's literal string, and the record holds exactly that text
    assert coder.calls[0][0][0] == rec["code_prompt"]
    assert rec["code_prompt"].startswith("<|im_start|>You are a helpful assistant help user solve problems. <|im_end|>")


def test_chat_template_layout_and_per_task_time_limit(engine: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test = 1, 1
    cfg.rollout.prompt_layout, cfg.data.time_limit = "chat_template", "per_task"
    coder = Scripted(CODE_ANSWERS, tokenizer=engine.tokenizer)
    rec = rollout_tasks(tasks(1), coder, coder, cfg, engine.tokenizer, give_example=False)[0]
    assert rec["time_limit_s"] == 2.5
    assert rec["code_prompt"] == coder.calls[0][0][0]
    assert rec["code_prompt"].startswith("<|im_start|>system\n") and rec["code_prompt"].endswith("<|im_start|>assistant\n")


def test_evaluation_variant(engine: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test = 1, 1
    rec = rollout_tasks(tasks(1), Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS), cfg, engine.tokenizer,
                        give_example=False, evaluation=True)[0]
    assert rec["time_limit_s"] == 2.5  # evaluation: each task's limit, as the reference's eval.py
    assert rec["typing_names"] is True
    assert ("script. Your code should output the results based on the input read in, rather than generating the given "
            "test example.\nThis is the problem:\nPrint 0 plus the input. <|im_end|>") in rec["code_prompt"]
    cfg.eval.exec_namespace = "plain"
    rec = rollout_tasks(tasks(1), Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS), cfg, engine.tokenizer,
                        give_example=False, evaluation=True)[0]
    assert rec["typing_names"] is False


def test_post_stage_hides_the_public_example(engine: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.rollout.p_give_example = 1, 1, 1.0
    recs = rollout_tasks(tasks(6), Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS), cfg, engine.tokenizer)
    assert all(r["give_example"] for r in recs)
    cfg.reward.post_stage = True
    recs = rollout_tasks(tasks(6), Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS), cfg, engine.tokenizer)
    assert not any(r["give_example"] for r in recs)
    assert all("We already have" not in r["test_prompt"] for r in recs)


def test_public_example_is_a_seeded_draw_per_task(engine: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.rollout.p_give_example = 1, 1, 0.5

    def draws(seed: int) -> list[bool]:
        cfg.rollout.seed = seed
        recs = rollout_tasks(tasks(24), Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS), cfg, engine.tokenizer)
        for r in recs:
            assert ("We already have one test sample" in r["test_prompt"]) == r["give_example"]
        return [r["give_example"] for r in recs]

    assert draws(1) == draws(1)
    assert 0 < sum(draws(1)) < 24
    assert draws(1) != draws(2)
    cfg.rollout.p_give_example = 0.0
    assert not any(draws(1))


def test_cure_rollout_cli_writes_a_valid_artifact(model_dir: Path, tmp_path: Path) -> None:
    tasks_path, out = tmp_path / "tasks.jsonl", tmp_path / "rollouts.jsonl"
    write_jsonl(tasks_path, tasks(2))
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    (model / "prompts").mkdir()
    (model / "prompts" / "coder_user.j2").write_text("SHORT CODER PROMPT: {{ problem }}")
    rc = cure_main(["rollout", "--tasks", str(tasks_path), "--model", str(model), "--engine", "hf", "--k-code", "3",
                    "--k-test", "2", "--out", str(out), "--seed", "4", "--max-new-tokens", "12"])
    assert rc == 0
    records = read_jsonl(out)
    assert [r["task_id"] for r in records] == ["t0", "t1"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    for r in records:
        assert "SHORT CODER PROMPT: Print" in r["code_prompt"]  # the model folder's prompts/ is the default
        # the default layout is the reference's literal one, although this tokenizer has a chat template
        assert r["code_prompt"].startswith("<|im_start|>You are a helpful assistant help user solve problems. <|im_end|>\n"
                                           "<|im_start|>User: SHORT CODER PROMPT: Print")
        assert r["code_prompt"].endswith(" <|im_end|>\n<|im_start|>Assistant: ")
        assert r["test_prompt"].endswith("explanation here.\n <|im_end|>\n<|im_start|>Assistant: ")
        assert len(r["code_responses"]) == len(r["code_lengths"]) == len(r["codes"]) == len(r["code_truncated"]) == 3
        assert len(r["test_responses"]) == len(r["test_lengths"]) == len(r["tests"]) == len(r["test_truncated"]) == 2
        assert r["code_lengths"] == [len(tok.encode(t, add_special_tokens=False)) for t in r["code_responses"]]
        assert r["test_lengths"] == [len(tok.encode(t, add_special_tokens=False)) for t in r["test_responses"]]
        assert r["codes"] == [extract_code(t)[0] for t in r["code_responses"]]
        assert r["tests"] == [extract_test(t)[0] for t in r["test_responses"]]
        assert r["extract_failures"] == {"code": r["codes"].count(None), "test": r["tests"].count(None)}
        assert len(r["gt_tests"]) == 8 and r["time_limit_s"] == 1.0
    # same seed, same artifact
    again = tmp_path / "again.jsonl"
    cure_main(["rollout", "--tasks", str(tasks_path), "--model", str(model), "--engine", "hf", "--k-code", "3",
               "--k-test", "2", "--out", str(again), "--seed", "4", "--max-new-tokens", "12"])
    assert read_jsonl(again) == records



def test_shards_are_contiguous_and_cover_all_tasks() -> None:
    from cure.rollout.stage import shard

    items = list(range(10))
    parts = [shard(items, f"{k}/4") for k in range(4)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert shard(items[:2], "3/4") == []
    with pytest.raises(ValueError, match="need 0 <= K < N"):
        shard(items, "4/4")
    with pytest.raises(ValueError, match="expected K/N"):
        shard(items, "half")


def test_example_draw_does_not_depend_on_sharding(engine: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.rollout.p_give_example = 1, 1, 0.5
    ts = tasks(12)

    def draws(subset: list[Task]) -> list[bool]:
        recs = rollout_tasks(subset, Scripted(CODE_ANSWERS), Scripted(TEST_ANSWERS), cfg, engine.tokenizer)
        return [r["give_example"] for r in recs]

    assert draws(ts[:5]) + draws(ts[5:]) == draws(ts)


def test_cli_reports_a_missing_api_key_without_a_traceback(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CURE_TEST_TESTER_KEY", raising=False)
    tasks_path = tmp_path / "tasks.jsonl"
    write_jsonl(tasks_path, tasks(1))
    rc = cure_main(["rollout", "--tasks", str(tasks_path), "--model", str(model_dir), "--engine", "hf",
                    "--tester-model", "gpt-4o-mini", "--tester-engine", "openai", "--out", str(tmp_path / "r.jsonl"),
                    "--set", "rollout.api_key_env=CURE_TEST_TESTER_KEY"])
    assert rc == 1
    assert "CURE_TEST_TESTER_KEY is not set" in caplog.text
    assert not (tmp_path / "r.jsonl").exists()
