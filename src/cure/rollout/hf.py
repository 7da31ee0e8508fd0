"""The transformers engine: ``model.generate`` in batches, the CPU default (and a CUDA fallback without vLLM).

Every prompt is repeated ``n`` times and the sequences are generated ``cfg.batch_size`` at a time with left
padding, so the new tokens of every row start at the same column. A response ends at the first end-of-sequence
token or stop string (a stopping criterion on the generated text ends the row early; the text is then cut before
the stop string, as vLLM does). Text is decoded without special tokens (vLLM's default), and its length is
re-counted from the text (see :class:`cure.rollout.engine.Completion`).

Sampling is seeded per batch (``seed + batch index``): the same prompts, parameters and batch size give the same
completions. On CPU the model runs in float32 (bf16 matmuls on CPU are slow and not bit-stable); on CUDA in
``cfg.dtype``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from transformers import StoppingCriteria

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


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """A string prompt as is; chat messages through the tokenizer's chat template (with the generation prompt)."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("got chat messages but the tokenizer has no chat template: pass rendered prompt strings")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


class _StopStrings(StoppingCriteria):
    """Ends a row once a stop string appears in its *generated* text.

    transformers' own ``stop_strings`` also matches across the prompt boundary (a prompt ending in "\\n" plus
    three generated newlines "contains" a four-newline stop), which vLLM does not; this checks only the decoded
    tail of the new tokens (long enough to hold any stop string: at most 4 byte-tokens per character).
    """

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tok, self.stop, self.prompt_len = tokenizer, [s for s in stop if s], prompt_len
        self.window = 4 * max((len(s) for s in self.stop), default=1) + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, self.prompt_len :][:, -self.window :].tolist()
        texts = self.tok.batch_decode(tails, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


class HFEngine(Engine):
    """Batched sampling with transformers ``generate``."""

    def __init__(
        self,
        model: str,
        cfg: RolloutConfig,
        *,
        device: str | None = None,
        model_obj: Any | None = None,
        tokenizer_obj: Any | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = cfg.batch_size
        tok = tokenizer_obj or AutoTokenizer.from_pretrained(model)
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._tok = tok
        if model_obj is None:
            dtype = getattr(torch, cfg.dtype) if self.device.startswith("cuda") else torch.float32
            try:
                model_obj = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
            except OSError as e:
                raise OSError(
                    f"hf engine: cannot load model {model!r} ({e}); pass a save_pretrained folder "
                    "(e.g. one made by `cure model tiny --out DIR`) — nothing is downloaded here"
                ) from e
        self.model = model_obj.to(self.device).eval()
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self._eos_ids = sorted(eos_ids)
        self._max_len = getattr(self.model.config, "max_position_embeddings", None)
        self._warned_cap = False

    @property
    def tokenizer(self) -> Any:
        return self._tok

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        texts = [render_prompt(self._tok, p) for p in prompts]
        seqs = [i for i in range(len(texts)) for _ in range(params.n)]
        results: list[list[Completion]] = [[] for _ in texts]
        progress = Progress(len(seqs), "hf generate")
        try:
            for b, start in enumerate(range(0, len(seqs), self.batch_size)):
                batch = seqs[start : start + self.batch_size]
                done = self._generate_batch([texts[i] for i in batch], params, b)
                for i, completion in zip(batch, done):
                    results[i].append(completion)
                progress.update(len(batch))
        finally:
            progress.close()
        return results

    def _generate_batch(self, texts: list[str], params: SamplingParams, batch_index: int) -> list[Completion]:
        import torch

        enc = self._tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        max_new = params.max_new_tokens
        if self._max_len is not None:
            room = self._max_len - prompt_len
            if room < 1:
                raise ValueError(
                    f"hf engine: a prompt of {prompt_len} tokens does not fit model {self.name!r} "
                    f"(max_position_embeddings={self._max_len}); shorten the prompt templates (--prompt-dir)"
                )
            if room < max_new:
                if not self._warned_cap:
                    log.warning("hf engine: max_new_tokens %d capped to %d by the model's context of %d tokens",
                                max_new, room, self._max_len)
                    self._warned_cap = True
                max_new = room
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new,
            pad_token_id=self._tok.pad_token_id,
            eos_token_id=self._eos_ids or None,
        )
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k if params.top_k > 0 else 0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs["stopping_criteria"] = [_StopStrings(self._tok, params.stop, prompt_len)]
        if params.seed is not None:
            torch.manual_seed(params.seed + batch_index)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        rows = out[:, prompt_len:].tolist()
        return [self._finish(row, params.stop, max_new) for row in rows]

    def _finish(self, row: list[int], stop: list[str], max_new: int) -> Completion:
        ends = set(self._eos_ids) | {self._tok.pad_token_id}
        cut = next((j for j, t in enumerate(row) if t in ends), None)
        tokens = row if cut is None else row[:cut]
        text = self._tok.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text, hit_stop = truncate_at_stop(text, stop)
        stopped = cut is not None or hit_stop or len(row) < max_new
        return Completion(text, count_tokens(self._tok, text), "stop" if stopped else "length")

    def close(self) -> None:
        self.model = None
