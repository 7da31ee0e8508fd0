"""The OpenAI-compatible HTTP engine: a coder or tester served elsewhere (a vLLM server, a commercial API).

One request per prompt asks for ``n`` choices (servers that return fewer are asked again for the rest).
Requests run ``cfg.api_max_concurrency`` at a time, and their starts are spaced ``60 / cfg.api_rpm_limit``
seconds apart, so the rate stays under the requests-per-minute limit even across retries. A 429, a 5xx, a
timeout or a dropped connection is retried up to ``cfg.api_max_retries`` times with exponential backoff
(``cfg.api_backoff_s`` doubling, capped at 60 s), or after the server's ``Retry-After`` when it sends one.
A 401/403 (bad key) or 404 (wrong URL, mode or model name) fails at once with a message saying what to check.

``cfg.api_mode`` picks ``/chat/completions`` (messages; the API applies the model's chat template) or
``/completions`` (the rendered prompt text). In chat mode, ``cfg.api_request`` shapes the request:

* ``reference`` (the default): the reference's API request (``evaluation/eval.py``, ``fetch_completion``): the
  prompt text (the rollout stage renders it in ``rollout.prompt_layout``, by default the reference's literal
  string) as the user message under the system message :data:`REFERENCE_SYSTEM`, with the temperature and no
  other sampling parameter: no ``top_p``, ``top_k``, ``max_tokens`` (the server's own limit applies), stop strings
  or seed, and the returned text is not cut at the stop strings. The reference asks once per sample; here one
  request asks for ``n`` choices (the same independent samples, fewer requests);
* ``full``: the engine takes (system, user) messages built from the templates and sends every sampling parameter.

With every parameter sent (``full``, and completions mode), at most 4 stop strings are sent (OpenAI's limit); all
of them are applied to the returned text here, so the result is the same, only a few tokens dearer. ``top_k`` is
sent as the extension vLLM's and SGLang's servers read, except to ``api.openai.com``, whose API has no top-k cut.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from cure.rollout.engine import (
    Completion,
    Engine,
    Progress,
    Prompt,
    SamplingParams,
    count_tokens,
    truncate_at_stop,
)

if TYPE_CHECKING:
    from cure.config import RolloutConfig

log = logging.getLogger(__name__)

MAX_API_STOPS = 4
# The system message of the reference's API requests (evaluation/eval.py fetch_completion). Its OpenAI Batch API
# path (not offered here) sends "You are a helpful assistant." with max_tokens 2500 instead.
REFERENCE_SYSTEM = "You are a helpful coding assistant."
MAX_BACKOFF_S = 60.0


class ApiError(RuntimeError):
    """The API refused or kept failing; the message says which URL, what happened and what to check."""


class RateLimiter:
    """Spaces request starts ``60 / rpm`` seconds apart (thread-safe), so no minute sees more than ``rpm``."""

    def __init__(self, rpm: int) -> None:
        if rpm < 1:
            raise ValueError(f"requests-per-minute limit must be >= 1, got {rpm}")
        self.interval = 60.0 / rpm
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIEngine(Engine):
    """Samples through an OpenAI-compatible API with ``requests``."""

    def __init__(
        self,
        model: str,
        cfg: RolloutConfig,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        mode: str | None = None,
        tokenizer_obj: Any | None = None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or cfg.api_base_url).rstrip("/")
        self.mode = mode or cfg.api_mode
        if self.mode not in ("chat", "completions"):
            raise ValueError(f"openai engine: api_mode must be 'chat' or 'completions', got {self.mode!r}")
        #: the reference's request shape (chat mode only; module docstring)
        self.reference_request = self.mode == "chat" and cfg.api_request == "reference"
        # chat: the engine takes chat messages; with the reference's request it takes the prompt text instead
        self.chat = self.mode == "chat" and not self.reference_request
        self.url = f"{self.base_url}/{'chat/completions' if self.mode == 'chat' else 'completions'}"
        # OpenAI's own API has no top_k parameter: the cut is not sent there.
        self.no_top_k = urlparse(self.base_url).hostname == "api.openai.com"
        self.key_env = cfg.api_key_env
        key = api_key if api_key is not None else os.environ.get(cfg.api_key_env)
        if not key:
            raise ApiError(
                f"openai engine: the API key is missing: environment variable {cfg.api_key_env} is not set "
                f"(the name comes from rollout.api_key_env). Export the key for {self.base_url} there; for a local "
                f"server without authentication set any value, e.g. {cfg.api_key_env}=EMPTY"
            )
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.timeout_s = cfg.api_timeout_s
        self.max_retries = cfg.api_max_retries
        self.backoff_s = cfg.api_backoff_s
        self.concurrency = cfg.api_max_concurrency
        self.limiter = RateLimiter(cfg.api_rpm_limit)
        self._local = threading.local()
        self._tok = tokenizer_obj
        if self._tok is None and Path(model).is_dir() and (Path(model) / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(model)
        #: attempts made, retries included (for logs and tests)
        self.attempts = 0
        self._count_lock = threading.Lock()

    @property
    def tokenizer(self) -> Any | None:
        return self._tok

    def _session(self) -> Any:
        import requests

        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        progress = Progress(len(prompts) * params.n, f"openai {self.model}")
        results: list[list[Completion] | None] = [None] * len(prompts)
        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
                futures = {pool.submit(self._sample, p, params, i): i for i, p in enumerate(prompts)}
                try:
                    for fut, i in futures.items():
                        results[i] = fut.result()
                        progress.update(params.n)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        finally:
            progress.close()
        return [r for r in results if r is not None]

    def _sample(self, prompt: Prompt, params: SamplingParams, index: int) -> list[Completion]:
        out: list[Completion] = []
        while len(out) < params.n:
            seed = None if params.seed is None else params.seed + index + 1000 * len(out)
            got = self._request(prompt, params, params.n - len(out), seed)
            if not got:
                raise ApiError(f"openai engine: {self.url} returned no choices for model {self.model!r}")
            out.extend(got)
        return out[: params.n]

    def _body(self, prompt: Prompt, params: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
        if self.reference_request:
            messages = prompt if not isinstance(prompt, str) else [
                {"role": "system", "content": REFERENCE_SYSTEM}, {"role": "user", "content": prompt}]
            return {"model": self.model, "messages": messages, "temperature": params.temperature, "n": n}
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.stop:
            body["stop"] = list(params.stop[:MAX_API_STOPS])
        if params.top_k > 0 and not self.no_top_k:
            body["top_k"] = params.top_k  # an extension that vLLM's and SGLang's servers understand
        if seed is not None:
            body["seed"] = seed
        if self.mode == "chat":
            body["messages"] = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        else:
            if not isinstance(prompt, str):
                raise ValueError("openai engine in completions mode needs rendered prompt strings, got chat messages")
            body["prompt"] = prompt
        return body

    def _request(self, prompt: Prompt, params: SamplingParams, n: int, seed: int | None) -> list[Completion]:
        import requests

        body = self._body(prompt, params, n, seed)
        last = ""
        for attempt in range(self.max_retries + 1):
            self.limiter.acquire()
            with self._count_lock:
                self.attempts += 1
            wait: float | None = None
            try:
                r = self._session().post(self.url, json=body, headers=self._headers, timeout=self.timeout_s)
            except requests.Timeout:
                last = f"no answer within {self.timeout_s:g} s (rollout.api_timeout_s)"
            except requests.ConnectionError as e:
                last = f"cannot connect ({type(e).__name__}: {e}); check rollout.api_base_url={self.base_url!r}"
            else:
                if r.status_code == 200:
                    return self._parse(r, params, n)
                detail = r.text[:300].strip()
                if r.status_code in (401, 403):
                    raise ApiError(
                        f"openai engine: {self.url} rejected the API key (HTTP {r.status_code}): check that "
                        f"environment variable {self.key_env} (rollout.api_key_env) holds a valid key for "
                        f"{self.base_url}. Server said: {detail}"
                    )
                if r.status_code == 404:
                    raise ApiError(
                        f"openai engine: {self.url} answered 404 Not Found: check rollout.api_base_url "
                        f"({self.base_url!r}; it usually ends in /v1), rollout.api_mode ({self.mode!r}) and the "
                        f"model name ({self.model!r}). Server said: {detail}"
                    )
                if r.status_code != 429 and r.status_code < 500:
                    raise ApiError(f"openai engine: {self.url} answered HTTP {r.status_code}: {detail}")
                last = f"HTTP {r.status_code}: {detail}"
                wait = _retry_after(r.headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt) * (1 + 0.1 * random.random())
            log.warning("openai engine: %s: %s; retry %d/%d in %.1f s", self.url, last, attempt + 1,
                        self.max_retries, wait)
            time.sleep(wait)
        raise ApiError(
            f"openai engine: {self.url} failed {self.max_retries + 1} times (rollout.api_max_retries="
            f"{self.max_retries}); last error: {last}"
        )

    def _parse(self, r: Any, params: SamplingParams, n: int) -> list[Completion]:
        try:
            data = r.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        except (ValueError, KeyError, TypeError) as e:
            raise ApiError(f"openai engine: {self.url} sent a reply that is not an OpenAI completion: {r.text[:300]}") from e
        usage_tokens = (data.get("usage") or {}).get("completion_tokens")
        out = []
        for c in choices:
            raw = c.get("message", {}).get("content") if self.mode == "chat" else c.get("text")
            text, hit_stop = truncate_at_stop(raw or "", [] if self.reference_request else params.stop)
            finish = "length" if c.get("finish_reason") == "length" and not hit_stop else "stop"
            if self._tok is not None:
                num = count_tokens(self._tok, text)
            else:  # no local tokenizer: the server's count, shared evenly when it reports only a total
                num = int(usage_tokens) // max(1, len(choices)) if usage_tokens is not None else len(text.split())
            out.append(Completion(text, num, finish))
        return out

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None
