"""The offline tiny base model: ``cure model tiny --out DIR``.

One module per job: :mod:`~cure.tiny.spec` (sizes, settings, where things live), :mod:`~cure.tiny.tokenizer`,
:mod:`~cure.tiny.sft` (the warm start's data), :mod:`~cure.tiny.model` (the model and its bfloat16 training
forward), :mod:`~cure.tiny.warm_start`, :mod:`~cure.tiny.build` (build, cache, the shipped ``tiny:0``) and
:mod:`~cure.tiny.measure` (the starting point's accuracy).

No weights can be downloaded offline, so the demo builds its own policy: a byte-level BPE tokenizer trained on
the synthetic task texts (Qwen2's NFC normalizer and split-regex + ByteLevel pre-tokenizer, so
``AutoTokenizer.from_pretrained`` rebuilds exactly the tokenizer that was trained), a ~1 M-parameter
``Qwen2ForCausalLM``, and a short supervised warm start on the synthetic *train* split: coder prompt -> a fenced
reference program, tester prompt -> a reference test in CURE's ``**Test Input:**``/``**Test Output:**`` layout.
Computing a test's output is the harder skill (the model must run the task in its head), so every task gives
two tester examples and one coder example (``TinySpec.code_share`` can give coder examples for only a share of
the tasks). The tester's skill comes late: after 800 steps about 1% of its tests were correct, after 1,800 about
25% (measured without the wrong examples below). The warm start runs 2,400 steps. Its tester prompts never show
the task's public example, as the demo's rollouts and evaluations never do: with half of them showing it, the
round-0 tester was right on 0.097 of the held-out tests; without, on 0.193 (2,000 steps) and 0.246 (2,400).

A base model is imperfect in a particular way: it writes plausible programs and tests that are subtly wrong. The
warm start imitates that: 35% of the coder examples show one of the task's typical wrong programs (a neighbouring
constant, another operation of the family: :func:`cure.synthetic.wrong_solutions`) and 35% of the tester examples
give the output such a program prints (:func:`cure.synthetic.wrong_test`). So both roles start partly competent,
and RL, rewarded by ground-truth tests and by the execution matrix alone, has to learn which of its habits are
right. Without these shares the coder starts at its ceiling (0.96 one-shot accuracy) and has nothing to learn.

The folder is a normal ``save_pretrained`` checkpoint (config, safetensors, tokenizer with a chat template,
generation config whose eos is ``<|im_end|>``), so the rest of the pipeline loads it like Qwen2.5-Instruct.
The model is trained with SHORT prompt templates (``cure/templates/tiny``, copied to ``DIR/prompts``, the rollout
stage's default prompt folder for this model): the paper's long tester instructions would multiply the sequence
length and the CPU time. ``DIR/cure.json`` (:mod:`cure.model_settings`) says how the model wants to be prompted
(its chat template, no public example in tester prompts), so every command uses that unless told otherwise.

The warm start computes in bfloat16 where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), with
float32 parameters, gradients and optimizer state (mixed precision by hand, :func:`cure.tiny.model._response_loss`), and in float32
elsewhere (``$CURE_TINY_DTYPE`` or ``--dtype`` choose); the saved weights are float32 either way. On the 2-core
development box this made a step 1.9x to 2.2x faster than the model's own ``forward`` (``bench/bench_tiny.py``).

The build is deterministic given the seed, the precision, the thread count (single process, fixed thread count) and
the kind of CPU (float32 kernels differ between instruction sets), and cached: ``DIR/build_info.json`` records the
seed, step count, precision, a hash of the build's code and templates, and the sha256 of every file written; a
matching folder is reused as is. Because builds differ between kinds of CPU, the package ships the default model
(``tiny:0``, in ``cure/models/tiny``, built on the development box with bfloat16): every machine starts the demo from
the same weights, and ``cure model tiny`` rebuilds it (the same bytes on a CPU like the one that built it).
"""

from __future__ import annotations

import logging

from cure.tiny.build import build_tiny_model, file_checksums, tiny_model
from cure.tiny.measure import judge_test, measure, measure_model
from cure.tiny.model import compute_dtype, new_model
from cure.tiny.sft import format_test, sft_pairs
from cure.tiny.spec import DTYPE_ENV, MODEL_SETTINGS, SHIPPED_DIR, TEMPLATES_DIR, TinySpec
from cure.tiny.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, qwen2_bpe, tokenizer_corpus, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE", "DTYPE_ENV", "MODEL_SETTINGS", "SHIPPED_DIR", "SPECIAL_TOKENS", "TEMPLATES_DIR", "TinySpec",
    "build_tiny_model", "compute_dtype", "file_checksums", "format_test", "judge_test", "measure", "measure_model",
    "new_model", "qwen2_bpe", "sft_pairs", "tiny_model", "tokenizer_corpus", "train_tokenizer",
]

log = logging.getLogger(__name__)
