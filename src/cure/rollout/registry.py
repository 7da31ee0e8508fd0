"""The rollout engines by name: the one place that picks one (``rollout.engine``: hf, vllm, openai).

Each engine's module is imported only when it is asked for: :mod:`cure.rollout.hf` imports transformers and torch,
:mod:`cure.rollout.vllm_engine` vllm, so a CPU install never imports vllm and the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cure.rollout.engine import ENGINES, Engine
from cure.rollout.openai_engine import OpenAIEngine

if TYPE_CHECKING:
    from cure.config import RolloutConfig


def make_engine(kind: str, model: str, cfg: RolloutConfig, **kwargs: Any) -> Engine:
    """Build an engine: ``hf`` (transformers), ``vllm`` (offline vLLM) or ``openai`` (HTTP API).

    ``model`` is a model folder or hub name for hf/vllm, and the API's model name for openai. Each engine's module
    is imported only here, so vllm is needed only by those who ask for it.
    """
    if kind == "hf":
        from cure.rollout.hf import HFEngine

        return HFEngine(model, cfg, **kwargs)
    if kind == "vllm":
        from cure.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model, cfg, **kwargs)
    if kind == "openai":
        return OpenAIEngine(model, cfg, **kwargs)
    raise ValueError(f"unknown rollout engine {kind!r}: choose one of {', '.join(ENGINES)}")
