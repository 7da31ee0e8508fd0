"""The OpenAI-compatible engine against a real HTTP server on 127.0.0.1 that serves the fixture model.

The server (cure.rollout.serve) can inject failures (429/5xx with Retry-After) and slow answers, so retries,
backoff, timeouts and the requests-per-minute limiter are exercised over real sockets.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cure.config import CureConfig, RolloutConfig
from cure.rollout.engine import SamplingParams
from cure.rollout.hf import HFEngine
from cure.rollout.openai_engine import ApiError, OpenAIEngine, RateLimiter
from cure.rollout.serve import ServerState, make_server
from cure.rollout.stage import rollout_tasks
from cure.tasks import Task

sys.path.insert(0, str(Path(__file__).parent))
from rollout_fixtures import build_fixture_model  # noqa: E402

NAME = "fixture"
GREEDY = SamplingParams(n=1, temperature=0, max_new_tokens=12, stop=["<|im_end|>"], seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_model(tmp_path_factory.mktemp("fixture_model"))


@pytest.fixture(scope="module")
def local(model_dir: Path) -> HFEngine:
    return HFEngine(str(model_dir), RolloutConfig(engine="hf", batch_size=8))


@contextlib.contextmanager
def serving(engine: HFEngine, **kwargs) -> Iterator[tuple[str, ServerState]]:
    state = ServerState(engine, NAME, **kwargs)
    server = make_server(state, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def client(url: str, mode: str = "completions", key: str = "EMPTY", **cfg) -> OpenAIEngine:
    settings = dict(api_base_url=url, api_mode=mode, api_backoff_s=0.05, api_timeout_s=10, api_rpm_limit=6000)
    rc = RolloutConfig(**{**settings, **cfg})
    return OpenAIEngine(NAME, rc, api_key=key)


def gaps(state: ServerState) -> list[float]:
    times = [t for t, _ in state.arrivals]
    return [b - a for a, b in zip(times, times[1:])]


def test_completions_and_chat_match_the_local_engine(local: HFEngine) -> None:
    prompt = "<|im_start|>user\nsolve it<|im_end|>\n<|im_start|>assistant\n"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "add two numbers"}]
    want_text = local.generate([prompt], GREEDY)[0][0]
    want_chat = local.generate([messages], GREEDY)[0][0]
    with serving(local) as (url, state):
        got_text = client(url, "completions").generate([prompt], GREEDY)[0][0]
        got_chat = client(url, "chat", api_request="full").generate([messages], GREEDY)[0][0]
    assert (got_text.text, got_text.finish_reason) == (want_text.text, want_text.finish_reason)
    assert (got_chat.text, got_chat.finish_reason) == (want_chat.text, want_chat.finish_reason)
    assert [p for _, p in state.arrivals] == ["/v1/completions", "/v1/chat/completions"]


def test_n_choices_in_order_and_concurrency_limit(local: HFEngine) -> None:
    prompts = [f"<|im_start|>user\nproblem {i}<|im_end|>\n" for i in range(6)]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=7)
    with serving(local, slow_first=6, slow_s=0.3) as (url, state):
        out = client(url, api_max_concurrency=3).generate(prompts, params)
    assert [len(r) for r in out] == [3] * 6
    assert len(state.arrivals) == 6
    assert 2 <= state.max_in_flight <= 3
    # seeded per prompt: the same call again gives the same choices, in the same order
    with serving(local) as (url, _):
        again = client(url, api_max_concurrency=3).generate(prompts, params)
    assert [[c.text for c in r] for r in again] == [[c.text for c in r] for r in out]


def test_retries_429_honouring_retry_after(local: HFEngine) -> None:
    with serving(local, fail_first=2, fail_status=429, retry_after=0.4) as (url, state):
        engine = client(url)
        out = engine.generate(["hello"], GREEDY)
    assert len(out[0]) == 1
    assert engine.attempts == 3 and len(state.arrivals) == 3
    assert all(g >= 0.38 for g in gaps(state)), gaps(state)


def test_retries_5xx_with_exponential_backoff(local: HFEngine) -> None:
    with serving(local, fail_first=3, fail_status=503) as (url, state):
        engine = client(url, api_backoff_s=0.1)
        engine.generate(["hello"], GREEDY)
    g = gaps(state)
    assert len(state.arrivals) == 4
    assert g[0] >= 0.1 and g[1] >= 0.2 and g[2] >= 0.4, g


def test_gives_up_after_max_retries(local: HFEngine) -> None:
    with serving(local, fail_first=100, fail_status=500) as (url, state):
        with pytest.raises(ApiError, match=r"failed 3 times .*api_max_retries=2.*HTTP 500"):
            client(url, api_max_retries=2).generate(["hello"], GREEDY)
    assert len(state.arrivals) == 3


def test_timeout_is_retried_then_reported(local: HFEngine) -> None:
    with serving(local, slow_first=1, slow_s=4.0) as (url, state):
        engine = client(url, api_timeout_s=2.0)
        assert len(engine.generate(["hello"], GREEDY)[0]) == 1
        assert engine.attempts == 2
    with serving(local, slow_first=5, slow_s=1.0) as (url, _):
        with pytest.raises(ApiError, match=r"no answer within 0.3 s"):
            client(url, api_timeout_s=0.3, api_max_retries=0).generate(["hello"], GREEDY)


def test_requests_per_minute_limit_spaces_requests(local: HFEngine) -> None:
    rpm = 300  # one request every 0.2 s
    with serving(local) as (url, state):
        engine = client(url, api_rpm_limit=rpm, api_max_concurrency=5)
        engine.generate([f"p{i}" for i in range(5)], SamplingParams(n=1, max_new_tokens=2, seed=0))
    # starts are spaced 0.2 s apart by the client; arrival times jitter a little on a busy machine, so check the
    # span (without the limiter the five concurrent requests arrive within milliseconds)
    times = [t for t, _ in state.arrivals]
    assert len(times) == 5 and times[-1] - times[0] >= 4 * 0.2 - 0.1, gaps(state)


def test_rate_limiter_counts_across_threads() -> None:
    limiter = RateLimiter(rpm=1200)  # 0.05 s apart
    stamps: list[float] = []
    lock = threading.Lock()

    def hit() -> None:
        limiter.acquire()
        with lock:
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 5 * 0.05 - 0.01


def test_wrong_key_fails_at_once_naming_the_variable(local: HFEngine) -> None:
    with serving(local, api_key="secret") as (url, _):
        engine = client(url, key="wrong", api_key_env="MY_CODER_KEY")
        with pytest.raises(ApiError, match=r"rejected the API key \(HTTP 401\).*MY_CODER_KEY"):
            engine.generate(["hello"], GREEDY)
        assert engine.attempts == 1
        assert len(client(url, key="secret").generate(["hello"], GREEDY)[0]) == 1


def test_missing_key_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURE_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ApiError, match=r"CURE_TEST_NO_SUCH_KEY is not set .*rollout.api_key_env"):
        OpenAIEngine(NAME, RolloutConfig(api_key_env="CURE_TEST_NO_SUCH_KEY"))
    monkeypatch.setenv("CURE_TEST_NO_SUCH_KEY", "EMPTY")
    OpenAIEngine(NAME, RolloutConfig(api_key_env="CURE_TEST_NO_SUCH_KEY"))


def test_wrong_endpoint_or_model_is_not_retried(local: HFEngine) -> None:
    with serving(local) as (url, state):
        engine = client(url.removesuffix("/v1"))
        with pytest.raises(ApiError, match=r"404 Not Found: check rollout.api_base_url .*ends in /v1"):
            engine.generate(["hello"], GREEDY)
        assert engine.attempts == 1
        wrong_model = OpenAIEngine("gpt-nothing", RolloutConfig(api_base_url=url, api_mode="completions"), api_key="x")
        with pytest.raises(ApiError, match=r"404 .*'gpt-nothing'.*does not exist"):
            wrong_model.generate(["hello"], GREEDY)
        assert wrong_model.attempts == 1


def test_unreachable_server_is_retried_then_reported() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = client(f"http://127.0.0.1:{port}/v1", api_max_retries=1)
    with pytest.raises(ApiError, match=r"failed 2 times.*cannot connect"):
        engine.generate(["hello"], GREEDY)
    assert engine.attempts == 2


def test_reference_request_by_default(local: HFEngine) -> None:
    """The reference's API request (evaluation/eval.py fetch_completion): the literal prompt as the user message
    under "You are a helpful coding assistant.", the temperature and nothing else; the recorded prompt is that text."""
    from cure.prompts import code_prompt, test_prompt

    cfg = CureConfig()
    assert cfg.rollout.api_request == "reference"
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.rollout.temperature = 2, 1, 0.7
    task = Task(task_id="t0", source="unit", question="Print the sum of two integers.", example_input=["1 2\n"],
                example_output=["3\n"], test_input=["2 3\n"], test_output=["5\n"])
    with serving(local) as (url, state):
        api = client(url, "chat")
        assert api.chat is False  # it takes the prompt text, not messages
        rec = rollout_tasks([task], api, api, cfg, local.tokenizer, give_example=False)[0]
    literal = code_prompt(task.question, None, layout="reference")
    assert rec["code_prompt"] == literal and literal.startswith("<|im_start|>You are a helpful assistant help user")
    assert rec["test_prompt"] == test_prompt(task.question, [], [], None, layout="reference")
    bodies = sorted(state.bodies, key=lambda b: b["messages"][1]["content"] != literal)
    assert [sorted(b) for b in bodies] == [["messages", "model", "n", "temperature"]] * 2
    assert bodies[0]["messages"] == [{"role": "system", "content": "You are a helpful coding assistant."},
                                     {"role": "user", "content": literal}]
    assert bodies[1]["messages"][1]["content"] == rec["test_prompt"]
    assert [(b["temperature"], b["n"]) for b in bodies] == [(0.7, 2), (0.7, 1)]
    assert len(rec["code_responses"]) == 2 and len(rec["test_responses"]) == 1


def test_full_request_keeps_messages_and_every_parameter(local: HFEngine) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.rollout.max_new_tokens = 1, 0, 8
    task = Task(task_id="t0", source="unit", question="Print 1.", test_input=["\n"], test_output=["1\n"])
    with serving(local) as (url, state):
        api = client(url, "chat", api_request="full")
        assert api.chat is True
        rollout_tasks([task], api, api, cfg, local.tokenizer)
    body, = state.bodies
    assert {"top_p", "max_tokens", "stop", "seed", "temperature"} <= set(body) and body["max_tokens"] == 8
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == "You are a helpful assistant help user solve problems."


def test_reference_request_does_not_cut_at_stop_strings() -> None:
    """The reference keeps an API's reply whole; the full request cuts it at the stop strings it could not send."""

    class Reply:
        text = ""

        def json(self):
            return {"choices": [{"index": 0, "message": {"content": "x = 1\nUser: more"}, "finish_reason": "stop"}]}

    params = SamplingParams(n=1, temperature=1.0, stop=["User:"])
    ref = OpenAIEngine(NAME, RolloutConfig(api_mode="chat"), api_key="x")
    full = OpenAIEngine(NAME, RolloutConfig(api_mode="chat", api_request="full"), api_key="x")
    assert ref._parse(Reply(), params, 1)[0].text == "x = 1\nUser: more"
    assert full._parse(Reply(), params, 1)[0].text == "x = 1\n"
    # completions mode has no reference shape: every parameter, whatever api_request says
    comp = OpenAIEngine(NAME, RolloutConfig(api_mode="completions"), api_key="x")
    assert "stop" in comp._body("p", params, 1, 0) and comp.reference_request is False


def test_openai_tester_with_local_coder_in_a_rollout(local: HFEngine, model_dir: Path) -> None:
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test, cfg.rollout.max_new_tokens = 2, 3, 8
    task = Task(task_id="t0", source="unit", question="Print the sum of two integers.", example_input=["1 2\n"],
                example_output=["3\n"], test_input=["2 3\n"], test_output=["5\n"])
    with serving(local) as (url, state):
        tester = client(url, "chat")
        records = rollout_tasks([task], local, tester, cfg, local.tokenizer, give_example=True)
    rec = records[0]
    assert len(rec["code_responses"]) == 2 and len(rec["test_responses"]) == 3
    assert [p for _, p in state.arrivals] == ["/v1/chat/completions"]  # only the tester went over HTTP
    assert "We already have one test sample" in rec["test_prompt"]


@pytest.mark.slow
def test_serve_command_line(model_dir: Path) -> None:
    """`python -m cure.rollout.serve` starts, injects one 429, then answers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cure.rollout.serve", "--model", str(model_dir), "--served-model-name", NAME,
         "--port", str(port), "--fail-first", "1", "--retry-after", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        engine = client(f"http://127.0.0.1:{port}/v1")
        out = engine.generate(["hello"], GREEDY)
        assert len(out[0]) == 1 and engine.attempts == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
