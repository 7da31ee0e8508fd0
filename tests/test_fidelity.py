"""Reference behaviour by default: prompt strings, sampler defaults, time limit, post-stage coupling, evaluation
table handling, the evaluation namespace and the released-data loaders (issue: fidelity to Gen-Verse/CURE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cure.config import CureConfig
from cure.prompts import PromptTemplates, code_prompt, test_prompt

# --- the reference's prompt strings, written out (optimization_config.py / evaluation_config.py as rendered) ---

QUESTION = "Read an integer n.\nPrint n * 2."

CODER_TRAINING = (
    "<|im_start|>You are a helpful assistant help user solve problems. <|im_end|>\n"
    "<|im_start|>User: You need to think first then write python script. You should use input() to input and print() "
    "to output in your script. \n"
    "This is the problem:\n"
    "Read an integer n.\nPrint n * 2. <|im_end|>\n"
    "<|im_start|>Assistant: "
)
CODER_EVALUATION = (
    "<|im_start|>You are a helpful assistant help user solve problems. <|im_end|>\n"
    "<|im_start|>User: You need to think first then write python script. You should use input() to input and print() "
    "to output in your script. Your code should output the results based on the input read in, rather than generating "
    "the given test example.\n"
    "This is the problem:\n"
    "Read an integer n.\nPrint n * 2. <|im_end|>\n"
    "<|im_start|>Assistant: "
)
TESTER_HEAD = (
    "<|im_start|>You are a helpful assistant help user generate test examples for coding tasks. <|im_end|>\n"
    "<|im_start|>User: Given a coding task, instead of providing the final script, your task is to generate a new test "
    "example (both input, output and explanation).\n"
    "This is the problem:\n"
    "Read an integer n.\nPrint n * 2.\n"
    "\n"
)
TESTER_TAIL = (
    "\n"
    "You need to provide a new test example. A good test example should be completely accurate and conform to the "
    "problem\u2019s format requirements, while also possessing enough discriminative power to distinguish correct code "
    "from incorrect code.\n"
    "Before providing a test example, you must think carefully and reason step by step to derive an input and output "
    "you are very confident are correct. For example, start by designing an input you can reliably handle, then compute "
    "the output step by step. If you're unsure about the output, revise or re-design the input to ensure accuracy. "
    "Directly providing input/output pairs without this process is discouraged, as it often results in low accuracy.\n"
    "Finally, after completing these previous thinking and derivation steps (you should not write the final test example "
    "unless you have gone through these steps very thoroughly), you MUST put your final test example in the following "
    "format:\n"
    "\n"
    "**Test Input:**\n"
    "```input here```\n"
    "\n"
    "**Test Output:**\n"
    "```output here```\n"
    "\n"
    "**Explanation:**\n"
    "\n"
    "explanation here.\n"
    " <|im_end|>\n"
    "<|im_start|>Assistant: "
)
TESTER_NO_EXAMPLE = TESTER_HEAD + " " + TESTER_TAIL
TESTER_ONE_EXAMPLE = TESTER_HEAD + "We already have one test sample:\n Its input is '3\\n'. Its output is '6\\n'." + TESTER_TAIL
TESTER_TWO_EXAMPLES = (
    TESTER_HEAD
    + "We already have 2 test samples:\n The inputs are, respectively, '3\\n', '10\\n'. "
    "The corresponding outputs are '6\\n', '20\\n'."
    + TESTER_TAIL
)


class ChatTokenizer:
    """A tokenizer with a chat template: the reference layout must not use it."""

    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return "CHAT:" + "|".join(m["content"] for m in messages)


@pytest.mark.parametrize("tokenizer", [None, ChatTokenizer()])
def test_reference_layout_coder_prompts(tokenizer) -> None:
    assert code_prompt(QUESTION, tokenizer, layout="reference") == CODER_TRAINING
    assert code_prompt(QUESTION, tokenizer, layout="reference", wording="evaluation") == CODER_EVALUATION


@pytest.mark.parametrize("tokenizer", [None, ChatTokenizer()])
def test_reference_layout_tester_prompts(tokenizer) -> None:
    assert test_prompt(QUESTION, [], [], tokenizer, layout="reference") == TESTER_NO_EXAMPLE
    assert test_prompt(QUESTION, ["3\n"], ["6\n"], tokenizer, layout="reference") == TESTER_ONE_EXAMPLE
    assert test_prompt(QUESTION, ["3\n", "10\n"], ["6\n", "20\n"], tokenizer, layout="reference") == TESTER_TWO_EXAMPLES


def test_chat_template_layout_uses_the_tokenizer_and_says_when_it_cannot() -> None:
    p = code_prompt(QUESTION, ChatTokenizer(), layout="chat_template")
    assert p.startswith("CHAT:You are a helpful assistant help user solve problems.|You need to think first")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        code_prompt(QUESTION, None, layout="chat_template")


@pytest.mark.parametrize("layout", [None, "chat_template"])
def test_tiny_templates_keep_their_layout(layout) -> None:
    """The offline tiny model's own folder: what it was trained on (layout None) is what the demo's pinned
    chat_template layout gives it."""
    from cure.tiny.tokenizer import _ChatML

    t = PromptTemplates.load(Path(__file__).parents[1] / "src" / "cure" / "templates" / "tiny")
    p = test_prompt("Q", ["1\n"], ["2\n"], _ChatML(), t, layout=layout)
    assert p == ("<|im_start|>system\nWrite a test.<|im_end|>\n<|im_start|>user\nQ\n"
                 "We already have one test sample:\n Its input is '1\\n'. Its output is '2\\n'.\n<|im_end|>\n"
                 "<|im_start|>assistant\n")


# --- defaults --------------------------------------------------------------------------------------------------


def test_reference_defaults() -> None:
    c = CureConfig()
    assert (c.eval.temperature, c.eval.top_p, c.eval.top_k) == (0.8, 0.95, 40)
    assert (c.rollout.temperature, c.rollout.top_p, c.rollout.top_k) == (1.0, 1.0, -1)
    assert c.rollout.prompt_layout == "reference"
    assert (c.data.time_limit, c.data.default_time_limit_s) == ("fixed", 1.0)
    assert (c.eval.unextracted_tests, c.eval.exec_namespace) == ("drop", "reference")
    assert (c.rollout.extraction, c.rollout.api_request) == ("reference", "reference")


def test_evaluation_sampler_reaches_the_engine() -> None:
    from cure.evaluate import eval_config
    from cure.rollout.engine import SamplingParams

    c = eval_config(CureConfig(), seed=3, model="no-such-folder")
    params = SamplingParams.from_config(c.rollout, c.rollout.k_code)
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0.8, 0.95, 40, 3)


def test_openai_engine_sends_top_k_except_to_openai() -> None:
    from cure.config import RolloutConfig
    from cure.rollout.engine import SamplingParams
    from cure.rollout.openai_engine import OpenAIEngine

    params = SamplingParams(n=1, temperature=0.8, top_p=0.95, top_k=40)
    cfg = RolloutConfig(engine="openai", api_key_env="CURE_TEST_NO_SUCH_KEY", api_request="full")
    vllm_server = OpenAIEngine("m", cfg, base_url="http://127.0.0.1:8000/v1", api_key="x")
    assert vllm_server._body("hi", params, 1, 0)["top_k"] == 40
    openai = OpenAIEngine("m", cfg, base_url="https://api.openai.com/v1", api_key="x")
    body = openai._body("hi", params, 1, 0)
    assert "top_k" not in body and body["top_p"] == 0.95 and body["temperature"] == 0.8


def test_demo_presets_pin_the_previous_values() -> None:
    from cure.config import load_config

    for name in ("demo", "smoke"):
        c = load_config(preset=name)
        assert c.rollout.prompt_layout == "chat_template", name
        assert (c.eval.temperature, c.eval.top_p, c.eval.top_k) == (1.0, 1.0, -1), name
        assert (c.eval.unextracted_tests, c.eval.exec_namespace) == ("fail", "plain"), name


def test_synthetic_tasks_have_the_fixed_limit() -> None:
    """The demo's training limit does not change with data.time_limit: every synthetic task's limit is 1 s."""
    from cure.synthetic import generate_tasks

    assert {t.test_time_limit for t in generate_tasks(64, seed=0, split="train")} == {1.0}


# --- evaluation tables --------------------------------------------------------------------------------------


def test_unextracted_tests_are_dropped_and_untested_tasks_skipped() -> None:
    from cure.evaluate import eval_tables
    from cure.metrics import summarize

    rollouts = [{"tests": [{"input": "1\n", "output": "1\n"}, None]}, {"tests": [None, None]}]
    executions = [
        {"task_id": "a", "num_gt": 1, "passed": [[True, True, False], [False, False, False]]},
        {"task_id": "b", "num_gt": 1, "passed": [[True, False, False], [True, False, False]]},
    ]
    cfg = CureConfig()
    tables = eval_tables(rollouts, executions, cfg)
    assert [gen.shape for _, gen in tables] == [(2, 1), (2, 0)]
    ref = summarize(tables, [(2, 1)], skip_untested=True)
    assert ref["num_tasks"] == 1 and ref["code_acc"] == 0.5 and ref["unit_test_acc"] == 1.0 and ref["bon_2x1"] == 1.0
    cfg.eval.unextracted_tests = "fail"
    strict = summarize(eval_tables(rollouts, executions, cfg), [(2, 1)])
    assert strict["num_tasks"] == 2 and strict["code_acc"] == 0.75 and strict["unit_test_acc"] == 0.25


def test_p01_of_an_empty_pool_is_what_the_reference_prints() -> None:
    """eval.py prints ``1 - p_01`` with ``p_01 = safe_divide(rejections, pairs)``, and safe_divide(x, 0) is 0: with
    no (wrong program, correct test) pair it prints 1.0."""
    import numpy as np

    from cure.metrics import summarize

    all_correct = (np.ones((2, 1), bool), np.ones((2, 1), bool))
    m = summarize([all_correct])
    assert m["p01"] == 1.0 and m["p00"] == 0.0 and m["num_tasks"] == 1
    assert summarize([])["p01"] == 1.0
    # a non-empty pool: the share of (wrong program, correct test) pairs the wrong program passes
    gt = np.array([[True], [False], [False]])
    gen = np.array([[True, True], [True, False], [False, False]])
    assert summarize([(gt, gen)])["p01"] == 0.25


# --- the evaluation's exec namespace, in the real worker ---------------------------------------------------------


def test_typing_names_in_the_evaluation_namespace() -> None:
    from cure.config import ExecuteConfig
    from cure.execute import execute_rollouts

    # annotations are evaluated, as under the reference's exec (the worker's own __future__ import must not leak)
    code = "def f(xs: List[int]) -> Optional[Tuple[int, int]]:\n    return (min(xs), max(xs))\nprint(*f([3, 1, 2]))"
    rec = {"task_id": "t", "codes": [code], "gt_tests": [{"input": "", "output": "1 3\n"}], "tests": [],
           "time_limit_s": 1.0}
    cfg = ExecuteConfig(isolation="none", workers=1)
    plain, with_names = execute_rollouts([rec, dict(rec, task_id="t2", typing_names=True)], cfg, progress=False)
    assert plain["status"] == [["error"]]
    assert with_names["status"] == [["pass"]]


# --- released datasets -------------------------------------------------------------------------------------------


def _released_rows() -> list[dict]:
    """Two tasks in the released files' format (fields of data/readme.md of the reference; no ids)."""
    return [
        {"question": "Print the sum of two integers.", "test_time_limit": 1, "example_input": ["1 2\n"],
         "example_output": ["3\n"], "test_input": ["2 3\n", "10 -4\n"], "test_output": ["5\n", "6\n"]},
        {"question": "Print n twice.", "test_time_limit": 2, "example_input": [], "example_output": [],
         "test_input": ["7\n"], "test_output": ["7\n7\n"]},
    ]


def _hub_cache(root: Path, repo: str, filename: str, rows: list[dict]) -> None:
    """A Hugging Face hub cache holding one dataset file, laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / ("datasets--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    f = base / "snapshots" / commit / filename
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(rows))


@pytest.mark.parametrize("name", ["codecontests_train", "codecontests", "livebench", "livecodebench", "codeforces", "mbpp"])
def test_released_loaders_through_the_hub_cache(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    from cure.data import RELEASED
    from cure.stages import prepare_data
    from cure.tasks import load_tasks

    repo, filename = RELEASED[name]
    _hub_cache(tmp_path / "hub", repo, filename, _released_rows())
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    out = tmp_path / "tasks.jsonl"
    assert prepare_data(name, str(out)) == {"tasks": 2, "bad_rows": 0, "unlabeled": 0}
    tasks, _ = load_tasks(out)
    assert [t.task_id for t in tasks] == [f"{name}/0", f"{name}/1"]
    assert tasks[0].source == name and tasks[1].test_time_limit == 2.0 and tasks[0].example_input == ["1 2\n"]
    assert prepare_data(f"{name}:1", str(out))["tasks"] == 1


def test_released_file_names_and_defaults() -> None:
    from cure.data import PAPER_BENCHMARKS, RELEASED, TRAIN_DATA

    assert RELEASED["codecontests_train"] == ("Gen-Verse/CodeContests_train", "train/CodeContests_train.json")
    assert RELEASED["codeforces"] == ("Gen-Verse/CodeForces", "test/CodeForces.json")
    assert TRAIN_DATA == "codecontests_train"
    assert [b.split("=")[0] for b in PAPER_BENCHMARKS] == ["codecontests", "livebench", "livecodebench", "codeforces", "mbpp"]


def test_released_loader_without_the_hub_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    from cure.data import load_released
    from cure.tasks import TaskFormatError

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(TaskFormatError, match="pass --path FILE"):
        load_released("mbpp")
    f = tmp_path / "MBPP.json"
    f.write_text(json.dumps(_released_rows()))
    tasks, bad = load_released("mbpp", str(f))
    assert [t.task_id for t in tasks] == ["mbpp/0", "mbpp/1"] and not bad


def test_cli_prepares_a_released_dataset_from_a_local_copy(tmp_path: Path) -> None:
    from cure.tasks import read_jsonl
    from cure_cli import main as cure_main

    f = tmp_path / "LiveBench.json"
    f.write_text(json.dumps(_released_rows()))
    out = tmp_path / "tasks.jsonl"
    assert cure_main(["data", "prepare", "--source", "livebench", "--path", str(f), "--out", str(out)]) == 0
    assert [r["task_id"] for r in read_jsonl(out)] == ["livebench/0", "livebench/1"]


def test_pipeline_defaults_are_the_reference_data() -> None:
    import inspect

    from cure_pipelines import training

    from cure.data import PAPER_BENCHMARKS, TRAIN_DATA

    train_sig = inspect.signature(training.build_training_pipeline).parameters
    assert train_sig["train_data"].default == TRAIN_DATA
    assert train_sig["eval_benchmarks"].default == PAPER_BENCHMARKS
    assert inspect.signature(training.build_eval_pipeline).parameters["eval_benchmarks"].default == PAPER_BENCHMARKS


# --- the evaluation stage end to end (scripted model, real worker without isolation) ---------------------------


class _Scripted:
    """An engine answering every prompt with fixed responses; records the sampling parameters it got."""

    chat = False
    tokenizer = None

    def __init__(self, code: list[str], tests: list[str]) -> None:
        self.code, self.tests, self.params = code, tests, []

    def generate(self, prompts, params):
        from cure.rollout.engine import Completion

        self.params.append(params)
        texts = self.code if "solve problems" in prompts[0] else self.tests
        return [[Completion(texts[j % len(texts)], 1, "stop") for j in range(params.n)] for _ in prompts]


class _CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return list(text)


def test_evaluation_defaults_end_to_end() -> None:
    from cure.evaluate import evaluate_tasks
    from cure.tasks import Task

    good = "```python\nxs: List[int] = [int(x) for x in input().split()]\nprint(sum(xs))\n```"
    wrong = "```python\nprint(0)\n```"
    test = "**Test Input:**\n```1 2```\n\n**Test Output:**\n```3```\n\n**Explanation:**\n\nsum"
    tasks = [Task(task_id=f"t{i}", source="unit", question="Print the sum of the integers on the line.",
                  test_time_limit=2.0, example_input=["1 1\n"], example_output=["2\n"],
                  test_input=["2 3\n", "4 4\n"], test_output=["5\n", "8\n"]) for i in range(2)]
    cfg = CureConfig()
    cfg.execute.isolation, cfg.execute.workers = "none", 1
    cfg.eval.k_code, cfg.eval.k_test, cfg.eval.scales = 2, 2, [(2, 2)]
    engine = _Scripted([good, wrong], [test, "no test here"])
    metrics, rollouts, _ = evaluate_tasks("m", tasks, cfg, engine=engine, tokenizer=_CharTokenizer())
    assert [(p.temperature, p.top_p, p.top_k) for p in engine.params] == [(0.8, 0.95, 40)] * 2
    r = rollouts[0]
    assert r["time_limit_s"] == 2.0 and r["typing_names"] is True and r["tests"][1] is None
    assert "rather than generating the given test example." in r["code_prompt"]
    assert "We already have" not in r["test_prompt"]
    # the good program uses List unimported (predefined at evaluation); the unextracted test is left out
    assert metrics["code_acc"] == 0.5 and metrics["unit_test_acc"] == 1.0 and metrics["bon_2x2"] == 1.0
    assert metrics["num_tasks"] == 2
    cfg.eval.exec_namespace, cfg.eval.unextracted_tests = "plain", "fail"
    metrics, _, _ = evaluate_tasks("m", tasks, cfg, engine=_Scripted([good, wrong], [test, "x"]), tokenizer=_CharTokenizer())
    assert metrics["code_acc"] == 0.0 and metrics["unit_test_acc"] == 0.0
