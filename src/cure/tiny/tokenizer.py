"""The tiny model's tokenizer: a byte-level BPE trained on the synthetic task texts, laid out as Qwen2's, with ChatML.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cure import synthetic
from cure.prompts import PromptTemplates, code_prompt, test_prompt
from cure.tasks import Task
from cure.tiny.sft import format_test
from cure.tiny.spec import TinySpec

log = logging.getLogger(__name__)


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


# Qwen2.5-style ChatML, without the tool-calling branches.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def qwen2_bpe() -> Any:
    """An untrained byte-level BPE ``tokenizers.Tokenizer`` with Qwen2's pipeline (NFC normalizer, split-regex +
    ByteLevel pre-tokenizer, ByteLevel decoder), so that ``AutoTokenizer`` reloads exactly what was trained."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tk = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    return tk


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path, min_frequency: int = 40) -> Any:
    """Train a byte-level BPE with Qwen2's normalizer/pre-tokenizer; save it and reload it with AutoTokenizer.

    The reload is what the pipeline will see, so it is returned (and checked to encode like the trained one).
    """
    from tokenizers import pre_tokenizers, trainers
    from transformers import AutoTokenizer

    tk = qwen2_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=min_frequency,
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tk.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": TinySpec.max_positions,
        "chat_template": CHAT_TEMPLATE,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    probe = texts[0] + " héllo\n\tworld 12345 <|im_end|>"
    if tok(probe)["input_ids"] != tk.encode(probe).ids:
        raise RuntimeError(
            "the tokenizer reloaded by AutoTokenizer encodes differently from the trained one: "
            "its normalizer/pre-tokenizer no longer match Qwen2's (check the transformers version)"
        )
    return tok


class _ChatML:
    """Renders CHAT_TEMPLATE before a tokenizer exists (to train the tokenizer on the final text layout)."""

    chat_template = CHAT_TEMPLATE

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        from jinja2 import Template

        return Template(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=add_generation_prompt)


def tokenizer_corpus(tasks: list[Task], templates: PromptTemplates) -> list[str]:
    """The texts the BPE is trained on: prompts, programs and the test layout, but no free-form data.

    Test inputs/outputs and public examples hold random words; merges learned from them would split the same
    word differently in different places (``qa`` alone vs ``,qa``), which makes copying a word, the core of
    the string families, a spelling problem for a tiny model. Learning merges only from the fixed wording
    (with a minimum frequency) keeps random words in short, context-independent pieces.
    """
    chat = _ChatML()
    texts = [format_test("1\n", "2\n")]
    for task in tasks:
        texts.append(code_prompt(task.question, chat, templates) + f"```python\n{synthetic.reference_solution(task)}\n```")
        texts.append(test_prompt(task.question, None, None, chat, templates))
    return texts
