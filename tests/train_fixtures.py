"""A tiny random Qwen2 causal LM and a byte-level BPE tokenizer, built in-process for the training tests.

Independent of :mod:`cure.tiny` on purpose: the training tests need a model that is small (about 100k
parameters), deterministic and fast to build (no downloads, a second or two), not one that can write code.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

TRAIN_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "print(sum(map(int, input().split())))\n",
    "**Test Input:**\n```1 2```\n\n**Test Output:**\n```3```\n",
    "You need to think first then write python script.",
    "<|im_start|>User: solve the problem <|im_end|>\n<|im_start|>Assistant: ",
    "for i in range(10):\n    print(i * i)\n",
]


def build_tiny_model(
    path: str | Path, *, seed: int = 0, vocab_size: int = 320, tie: bool = True, hidden: int = 64, layers: int = 2
) -> Path:
    """Write a random Qwen2ForCausalLM (default hidden 64, 2 layers) and its tokenizer to ``path``; return the path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXTS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    random.seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    # A larger init than the default 0.02 so that log-probabilities differ visibly between tokens.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(path)
    return path


def make_records(n: int = 12, *, seed: int = 0) -> list[dict]:
    """Reward-artifact records ``{prompt, response, reward, role, task_id}`` with varied lengths and rewards."""
    rng = random.Random(seed)
    prompts = [
        "<|im_start|>User: add two numbers <|im_end|>\n<|im_start|>Assistant: ",
        "<|im_start|>User: write a test <|im_end|>\n<|im_start|>Assistant: ",
        "<|im_start|>User: print squares <|im_end|>\n<|im_start|>Assistant: ",
    ]
    responses = [
        "def add(a, b):\n    return a + b\n",
        "print(sum(map(int, input().split())))",
        "**Test Input:**\n```1 2```\n\n**Test Output:**\n```3```",
        "for i in range(10):\n    print(i * i)\n",
        "print(1)",
        "x",
    ]
    records = []
    for i in range(n):
        role = "coder" if i % 2 == 0 else "tester"
        records.append(
            {
                "prompt": prompts[i % len(prompts)],
                "response": rng.choice(responses),
                "reward": round(rng.uniform(-1.5, 1.5), 3),
                "role": role,
                "task_id": f"t{i // 4}",
            }
        )
    return records


def sequence_logprob(model_dir: str | Path, prompt: str, response: str) -> float:
    """Sum of the response tokens' log-probabilities given the prompt under the model in ``model_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    picked = logp.gather(-1, targets[:, None])[:, 0]
    return float(picked[len(p_ids) - 1 :].sum())


def load_weights(model_dir: str | Path) -> dict:
    """The model's parameters as loaded by ``from_pretrained`` (the round trip the rollout engines make)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def small_train_config(**overrides):
    """A TrainConfig sized for the tiny model: short lengths, a visible learning rate, no checkpointing."""
    from cure.config import TrainConfig

    base = dict(
        engine="torch",
        prompt_max_len=48,
        generate_max_len=48,
        packing_max_len=120,
        micro_batch_tokens=120,
        learning_rate=1e-3,
        gradient_checkpointing=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """One tiny model per test session (read-only: tests write their outputs elsewhere)."""
    return build_tiny_model(tmp_path_factory.mktemp("train-tiny") / "model")
