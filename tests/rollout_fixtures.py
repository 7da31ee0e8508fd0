"""A small random Qwen2 model with a byte-level BPE tokenizer, built in-process for the rollout tests.

It loads through ``from_pretrained`` like a real checkpoint (chat template, ``<|im_start|>``/``<|im_end|>``/
``<|endoftext|>``), but is random: its outputs are arbitrary text, which is what the engine tests need (stop
strings, end-of-sequence handling, token counts, seeds), not competence.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "def solve():\n    n = int(input())\n    print(n * 2)\n\nsolve()\n",
    "```python\nx = input().split()\nprint(sum(int(a) for a in x))\n```\n",
    "**Test Input:**\n```1 2 3```\n\n**Test Output:**\n```6```\n\n**Explanation:**\n\nThe sum is 6.\n",
    "You are a helpful assistant help user solve problems. This is the problem: read a number and print it.",
    "Given a coding task, generate a new test example (both input, output and explanation).",
]


def build_fixture_model(out_dir: str | Path, seed: int = 0, vocab_size: int = 400, hidden_size: int = 32, heads: int = 4) -> Path:
    """Train the tokenizer on a few lines, build a ~40k-parameter Qwen2ForCausalLM, save both to ``out_dir``."""
    import torch
    from tokenizers import pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from cure.tiny import qwen2_bpe

    out = Path(out_dir)
    bpe = qwen2_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", clean_up_tokenization_spaces=False
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)

    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=im_end,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=im_end, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    return out
