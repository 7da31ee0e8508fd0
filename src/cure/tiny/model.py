"""The tiny ``Qwen2ForCausalLM`` and its training forward pass in bfloat16 with float32 master weights.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import logging
import os
from typing import Any

from cure.tiny.spec import DTYPE_ENV, TinySpec

log = logging.getLogger(__name__)


def new_model(tokenizer: Any, spec: TinySpec, seed: int) -> Any:
    """A freshly initialised small Qwen2ForCausalLM (tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(config)


class _Rope:
    """Qwen2's default rotary embedding (cos/sin tables for positions 0..n-1), and the causal mask for as many."""

    def __init__(self, config: Any, n: int, dtype: Any = None) -> None:
        import torch

        dim = config.hidden_size // config.num_attention_heads
        theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        dtype = dtype or torch.float32
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)
        self.mask = torch.full((n, n), float("-inf")).triu(1)  # added to the scores (float32)

    def apply(self, x: Any) -> Any:
        import torch

        n = x.shape[-2]
        cos, sin = self.cos[:n], self.sin[:n]
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


def _rms(x: Any, weight: Any, eps: float) -> Any:
    import torch

    h = x.float()
    return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(weight.dtype)


def compute_dtype(name: str) -> str:
    """``auto``: bfloat16 where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX: about 4x the float32
    matrix-product rate here), float32 elsewhere (emulated bfloat16 would be slower than float32).
    ``$CURE_TINY_DTYPE`` (``float32``, ``bfloat16``) replaces ``auto``, e.g. to build here what a CPU without native
    bfloat16 builds."""
    if name == "auto":
        name = os.environ.get(DTYPE_ENV) or "auto"
    if name in ("float32", "bfloat16"):
        return name
    if name != "auto":
        raise ValueError(f"compute dtype must be auto, float32 or bfloat16, got {name!r} (${DTYPE_ENV} or --dtype)")
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bfloat16" if native else "float32"


def _response_loss(model: Any, ids: Any, where: Any, targets: Any, rope: _Rope, dtype: Any = None) -> Any:
    """Mean cross-entropy of the response tokens under ``model`` (a Qwen2ForCausalLM with tied embeddings),
    computed functionally from its parameters: the same value as ``model(input_ids, attention_mask,
    labels).loss`` for right-padded rows.

    With ``dtype`` bfloat16 this is mixed precision by hand: the float32 parameters are cast for each use (so
    their gradients stay float32), matrix products and activations are bfloat16, and normalisation, softmax and
    the loss are float32. Attention is written out (scores, additive causal mask, softmax, values) rather than
    ``scaled_dot_product_attention``, whose CPU kernel's backward is slow for these short rows.
    """
    import torch
    import torch.nn.functional as F

    dtype = dtype or torch.float32

    def w(p: Any) -> Any:
        return p.to(dtype)

    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    group = heads // kv_heads
    dim = cfg.hidden_size // heads
    eps = cfg.rms_norm_eps
    b, n = ids.shape
    mask = rope.mask[:n, :n]
    x = F.embedding(ids, w(model.model.embed_tokens.weight))
    for layer in model.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        h = _rms(x, w(layer.input_layernorm.weight), eps)
        wqkv = w(torch.cat((att.q_proj.weight, att.k_proj.weight, att.v_proj.weight)))
        bias = None if att.q_proj.bias is None else w(torch.cat((att.q_proj.bias, att.k_proj.bias, att.v_proj.bias)))
        q, k, v = F.linear(h, wqkv, bias).split((heads * dim, kv_heads * dim, kv_heads * dim), dim=-1)
        # [b, kv_heads, group, n, dim] queries against [b, kv_heads, 1, n, dim] keys: grouped-query attention
        q = rope.apply(q.view(b, n, kv_heads, group, dim).permute(0, 2, 3, 1, 4))
        k = rope.apply(k.view(b, n, kv_heads, 1, dim).permute(0, 2, 3, 1, 4))
        v = v.view(b, n, kv_heads, 1, dim).permute(0, 2, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)).float() * dim**-0.5 + mask
        o = torch.softmax(scores, dim=-1).to(dtype) @ v  # [b, kv_heads, group, n, dim]
        x = x + F.linear(o.permute(0, 3, 1, 2, 4).reshape(b, n, heads * dim), w(att.o_proj.weight))
        h = _rms(x, w(layer.post_attention_layernorm.weight), eps)
        gate, up = F.linear(h, w(torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight)))).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, w(mlp.down_proj.weight))
    x = _rms(x[:, :-1][where], w(model.model.norm.weight), eps)
    return F.cross_entropy(F.linear(x, w(model.lm_head.weight)).float(), targets)
