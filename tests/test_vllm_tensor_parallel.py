"""vLLM tensor parallelism defaults to the rollout pod's GPUs (rollout.tensor_parallel_size 0), resolved without
vLLM: the count must divide the model's attention heads, or vLLM refuses it."""

from __future__ import annotations

import json

from cure.config import RolloutConfig
from cure.rollout.vllm_engine import resolve_tensor_parallel


def test_default_is_auto():
    assert RolloutConfig().tensor_parallel_size == 0


def test_auto_uses_every_visible_gpu_that_divides_the_heads(tmp_path):
    assert resolve_tensor_parallel(0, "m", gpus=8, heads=32) == 8
    assert resolve_tensor_parallel(0, "m", gpus=8, heads=28) == 4  # Qwen2.5-7B: 28 heads
    assert resolve_tensor_parallel(0, "m", gpus=2, heads=28) == 2
    assert resolve_tensor_parallel(0, "m", gpus=8, heads=40, kv_heads=8) == 8  # Qwen2.5-14B
    assert resolve_tensor_parallel(0, "m", gpus=6, heads=28, kv_heads=4) == 4  # never 7 or 6 (MLP split)
    assert resolve_tensor_parallel(0, "m", gpus=0) == 1 and resolve_tensor_parallel(0, "m", gpus=1) == 1
    assert resolve_tensor_parallel(3, "m", gpus=8, heads=28) == 3  # an explicit size is kept
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_attention_heads": 28,
                                                      "num_key_value_heads": 4, "hidden_size": 3584}))
    assert resolve_tensor_parallel(0, str(tmp_path), gpus=8) == 4  # heads read from the model folder
