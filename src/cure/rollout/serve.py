"""A small OpenAI-compatible HTTP server for a local model, through the hf engine.

``python -m cure.rollout.serve --model DIR --port 8000`` serves ``POST /v1/completions``,
``POST /v1/chat/completions`` and ``GET /v1/models`` — enough for the openai rollout engine (and for trying a
pipeline against an "API" without one). Generation is serialised (one model, one lock); requests are accepted
concurrently. For tests of client behaviour it can misbehave on purpose: answer the first ``fail_first``
requests with ``fail_status`` (and a ``Retry-After``), or delay the first ``slow_first`` answers by ``slow_s``.
It is a development server: no streaming, no TLS; bind it to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cure.config import RolloutConfig
from cure.rollout.engine import Engine, SamplingParams, count_tokens

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """What the server serves and how it misbehaves; ``arrivals`` records (time, path) of every request, ``bodies``
    the request bodies it answered."""

    engine: Engine
    model_name: str
    api_key: str | None = None
    fail_first: int = 0
    fail_status: int = 429
    retry_after: float | None = None
    slow_first: int = 0
    slow_s: float = 0.0
    chat_max_tokens: int = 1024  # a chat request without max_tokens: OpenAI's chat API sets no small default
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # the JSON body of every answered request
    in_flight: int = 0
    max_in_flight: int = 0
    generate_lock: threading.Lock = field(default_factory=threading.Lock)
    count_lock: threading.Lock = field(default_factory=threading.Lock)

    def arrive(self, path: str) -> int:
        """Record a request; returns its 0-based number."""
        with self.count_lock:
            self.arrivals.append((time.monotonic(), path))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(self.arrivals) - 1

    def leave(self) -> None:
        with self.count_lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, headers)

    def _authorized(self) -> bool:
        key = self.server.state.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._error(401, "Incorrect API key provided.")
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/v1/models":
            name = self.server.state.model_name
            self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "cure"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.rstrip("/")
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._error(404, f"no route {self.path}: use /v1/completions or /v1/chat/completions")
            return
        if not self._authorized():
            return
        k = state.arrive(path)
        try:
            self._answer(state, k, raw, path)
        finally:
            state.leave()

    def _answer(self, state: ServerState, k: int, raw: bytes, path: str) -> None:
        if k < state.fail_first:
            headers = {"Retry-After": f"{state.retry_after:g}"} if state.retry_after is not None else None
            self._error(state.fail_status, f"injected failure {k + 1}/{state.fail_first}", headers)
            return
        if k < state.slow_first:
            time.sleep(state.slow_s)
        try:
            body = json.loads(raw or b"{}")
            with state.count_lock:
                state.bodies.append(body)
            if body.get("model") != state.model_name:
                self._error(404, f"The model {body.get('model')!r} does not exist; this server has {state.model_name!r}")
                return
            self._send(200, self._complete(body, chat=path.endswith("chat/completions")))
        except (ValueError, TypeError, KeyError) as e:
            self._error(400, f"bad request: {type(e).__name__}: {e}")

    def _complete(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        state = self.server.state
        stop = body.get("stop") or []
        params = SamplingParams(
            n=int(body.get("n", 1)),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            top_k=int(body.get("top_k", -1)),
            # without max_tokens: /completions' documented default of 16 tokens; chat generates up to chat_max_tokens
            max_new_tokens=int(body.get("max_tokens") or (state.chat_max_tokens if chat else 16)),
            stop=[stop] if isinstance(stop, str) else list(stop),
            seed=body.get("seed"),
        )
        if chat:
            prompt: Any = body["messages"]
            if not isinstance(prompt, list):
                raise ValueError("messages must be a list of {role, content}")
        else:
            prompt = body["prompt"]
            if not isinstance(prompt, str):
                raise ValueError("prompt must be one string")
        with state.generate_lock:
            completions = state.engine.generate([prompt], params)[0]
        tok = state.engine.tokenizer
        prompt_text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        prompt_tokens = count_tokens(tok, prompt_text) if tok is not None else 0
        choices = []
        for i, c in enumerate(completions):
            choice: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice["text"] = c.text
            choices.append(choice)
        used = sum(c.num_tokens for c in completions)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": state.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


def make_server(state: ServerState, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Bind the server (port 0 = any free port: read ``server.server_address``); call ``serve_forever`` to run."""
    server = _Server((host, port), _Handler)
    server.state = state
    return server


def main(argv: list[str] | None = None) -> int:
    from cure.rollout.hf import HFEngine

    p = argparse.ArgumentParser(prog="python -m cure.rollout.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (save_pretrained), served through the hf engine")
    p.add_argument("--served-model-name", help="the name clients send as 'model' (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: no authentication)")
    p.add_argument("--batch-size", type=int, default=16, help="hf engine batch size")
    p.add_argument("--fail-first", type=int, default=0, help="testing: answer the first K requests with --fail-status")
    p.add_argument("--fail-status", type=int, default=429)
    p.add_argument("--retry-after", type=float, help="testing: Retry-After seconds sent with injected failures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = HFEngine(args.model, RolloutConfig(engine="hf", batch_size=args.batch_size))
    state = ServerState(engine, args.served_model_name or args.model, api_key=args.api_key,
                        fail_first=args.fail_first, fail_status=args.fail_status, retry_after=args.retry_after)
    server = make_server(state, args.host, args.port)
    host, port = server.server_address[:2]
    log.info("serving %s at http://%s:%d/v1", state.model_name, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
