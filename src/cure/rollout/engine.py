"""The one sampling interface every rollout engine implements.

A rollout needs, per prompt, ``n`` completions with their text, token count and why they stopped. Three engines
provide it: :mod:`cure.rollout.hf` (transformers ``generate``, the CPU default), :mod:`cure.rollout.vllm_engine`
(offline vLLM on GPU pods) and :mod:`cure.rollout.openai_engine` (any OpenAI-compatible HTTP API).
:func:`cure.rollout.registry.make_engine` picks one by name and imports it lazily, so a CPU install never imports
vllm and the CLI starts fast.

A prompt is either a rendered string (``Engine.chat`` is False: the engine feeds it to the model as is) or a list
of chat messages ``[{"role", "content"}, ...]`` (``Engine.chat`` is True: an API applies its own chat template).
The rollout stage renders text prompts in the configured layout (``rollout.prompt_layout``: the reference's literal
strings by default, or :meth:`Engine.tokenizer`'s chat template).
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cure.config import RolloutConfig

log = logging.getLogger(__name__)

Message = dict[str, str]
Prompt = str | list[Message]
FinishReason = Literal["stop", "length"]
ENGINES = ("hf", "vllm", "openai")


@dataclass(frozen=True)
class SamplingParams:
    """What to sample. ``temperature == 0`` means greedy; ``top_k <= 0`` means no top-k cut (CURE uses -1)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")

    @classmethod
    def from_config(cls, cfg: RolloutConfig, n: int, **overrides: Any) -> SamplingParams:
        """The rollout section's sampling settings (temperature, top-p/k, token limit, stops, seed) for ``n`` samples."""
        values: dict[str, Any] = dict(
            n=n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_new_tokens=cfg.max_new_tokens,
            stop=list(cfg.stop),
            seed=cfg.seed,
        )
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Completion:
    """One sampled response.

    ``text`` ends before the first stop string (which is not included) or the end-of-sequence token.
    ``num_tokens`` is the token count of ``text`` as CURE's reference counts response lengths:
    ``len(tokenizer.encode(text, add_special_tokens=False))`` with the engine's tokenizer (it can differ by a
    token or two from the number of tokens generated, since the stop string is cut and text is re-tokenised).
    ``finish_reason`` is ``"stop"`` (end-of-sequence token or stop string) or ``"length"`` (token limit hit:
    the response is truncated).
    """

    text: str
    num_tokens: int
    finish_reason: FinishReason


class Engine(ABC):
    """Samples ``params.n`` completions per prompt."""

    #: True when ``generate`` takes chat messages rather than rendered text.
    chat: bool = False

    @property
    def tokenizer(self) -> Any | None:
        """The model's tokenizer (renders prompts and counts tokens), or None when the model is remote."""
        return None

    @abstractmethod
    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` completions."""

    def close(self) -> None:  # noqa: B027 (optional hook, most engines need nothing)
        """Release model memory / connections. Safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest occurrence of any stop string; returns (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def count_tokens(tokenizer: Any, text: str) -> int:
    """Response length in tokens, counted as CURE's reference does (no special tokens added)."""
    return len(tokenizer.encode(text, add_special_tokens=False))


class Progress:
    """A tqdm bar on a terminal, plain log lines (about every 10%) otherwise, so logs in pods stay readable."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self._bar = None
        self._next_log = 0.1
        self._start = time.monotonic()
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="seq")

    def update(self, k: int) -> None:
        self.done += k
        if self._bar is not None:
            self._bar.update(k)
        elif self.total and self.done / self.total >= self._next_log - 1e-9:
            while self._next_log <= self.done / self.total:
                self._next_log += 0.1
            elapsed = time.monotonic() - self._start
            log.info("%s: %d/%d sequences (%.0f s)", self.desc, self.done, self.total, elapsed)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
