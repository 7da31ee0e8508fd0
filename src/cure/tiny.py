"""The offline tiny base model: ``cure model tiny --out DIR``.

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
float32 parameters, gradients and optimizer state (mixed precision by hand, :func:`_response_loss`), and in float32
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

import argparse
import ast
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cure import synthetic
from cure.config import CureConfig, ExecuteConfig
from cure.execute import execute_rollouts
from cure.model_settings import SETTINGS_FILE
from cure.prompts import PromptTemplates, code_prompt, extract_code, extract_test, test_prompt
from cure.tasks import Task

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates" / "tiny"
# The model this project ships: `tiny:0` (seed 0, the default steps), built once and checked in as package data, so
# every machine starts the demo from the same weights (a build is deterministic only on one kind of CPU).
SHIPPED_DIR = Path(__file__).parent / "models" / "tiny"
DTYPE_ENV = "CURE_TINY_DTYPE"
# How the model wants to be prompted (written to DIR/cure.json, read by cure.model_settings): it is trained on its
# chat template, and its tester prompts never show the public example.
MODEL_SETTINGS = {"rollout": {"prompt_layout": "chat_template", "p_give_example": 0.0}}
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2.5-style ChatML, without the tool-calling branches.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes and warm-start settings (build times: README, "Time split")."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 512
    warm_tasks: int = 6000  # synthetic train-split tasks used for the warm start
    steps: int = 2400  # optimizer steps of the warm start
    tests_per_task: int = 2  # tester examples per warm-start task (computing a test's output is the harder skill)
    code_share: float = 1.0  # share of warm-start tasks with a coder example (1.0: all)
    wrong_code_share: float = 0.35  # share of coder examples that show a typical wrong program instead
    wrong_test_share: float = 0.35  # share of tester examples whose output is a typical wrong program's
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    p_example: float = 0.0  # share of tester prompts showing the public example (the demo never shows it)
    threads: int = 1  # fixed so the result does not depend on the machine's core count; one thread: two crawled on a loaded 2-core box (1.7 s a step at load 11)
    dtype: str = "auto"  # warm-start compute precision (see compute_dtype); the saved weights are float32


def _code_version(spec: TinySpec) -> str:
    """A hash of what decides the built model: the build's own functions (not this module's other code, so editing
    the measurement or the CLI keeps a cached or shipped model valid), the synthetic tasks, the templates and the spec."""
    import inspect

    h = hashlib.sha256()
    h.update((CHAT_TEMPLATE + "".join(SPECIAL_TOKENS)).encode())
    for obj in _build_code():
        h.update(inspect.getsource(obj).encode())
    for path in [Path(synthetic.__file__), *sorted(TEMPLATES_DIR.glob("*.j2"))]:
        h.update(path.name.encode() + path.read_bytes())
    h.update(json.dumps(asdict(spec), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _build_code() -> list[Any]:
    return [qwen2_bpe, train_tokenizer, _ChatML, tokenizer_corpus, sft_pairs, format_test, _encode_pairs, new_model,
            warm_start, _batch_tensors, _Rope, _rms, compute_dtype, _response_loss, _length_batches, build_tiny_model,
            _readme, file_checksums]


# --- tokenizer ------------------------------------------------------------------------------------------


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


# --- warm-start data ------------------------------------------------------------------------------------


def sft_pairs(
    tasks: list[Task],
    tokenizer: Any,
    templates: PromptTemplates,
    rng: random.Random,
    p_example: float,
    tests_per_task: int = 1,
    code_share: float = 1.0,
    wrong_code_share: float = 0.0,
    wrong_test_share: float = 0.0,
) -> list[tuple[str, str]]:
    """(prompt, response) pairs from reference programs/tests: a coder example for the first ``code_share`` of
    the tasks (tasks cycle through the families, so every family gets its share) and ``tests_per_task`` tester
    examples for every task (each draws its own test and whether the prompt shows the public example).

    ``wrong_code_share`` of the coder examples show one of the task's typical wrong programs instead, and
    ``wrong_test_share`` of the tester examples a wrong program's output (:func:`cure.synthetic.wrong_test`)."""
    pairs = []
    n_code = round(code_share * len(tasks))
    for i, task in enumerate(tasks):
        if i < n_code:
            program = synthetic.reference_solution(task)
            if wrong_code_share and rng.random() < wrong_code_share:
                program = rng.choice(synthetic.wrong_solutions(task))
            pairs.append((code_prompt(task.question, tokenizer, templates), f"```python\n{program}\n```"))
        for _ in range(tests_per_task):
            if wrong_test_share and rng.random() < wrong_test_share:
                test = synthetic.wrong_test(task, rng)
            else:
                test = synthetic.reference_test(task, rng)
            show = rng.random() < p_example
            prompt = test_prompt(
                task.question,
                task.example_input if show else None,
                task.example_output if show else None,
                tokenizer,
                templates,
            )
            pairs.append((prompt, format_test(test["input"], test["output"])))
    return pairs


def format_test(test_input: str, test_output: str) -> str:
    """A tester response in the layout :func:`cure.prompts.extract_test` reads."""
    return f"**Test Input:**\n```\n{test_input}```\n\n**Test Output:**\n```\n{test_output}```"


def _encode_pairs(pairs: list[tuple[str, str]], tokenizer: Any) -> list[tuple[list[int], int]]:
    """Token ids of prompt + response + <|im_end|>, and where the response starts (loss only after it)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not pairs:
        return []
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]  # one batched call each
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    return [(p + r + [end], len(p)) for p, r in zip(prompts, responses)]


# --- model and warm start -------------------------------------------------------------------------------


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


def warm_start(
    model: Any, examples: list[tuple[list[int], int]], spec: TinySpec, steps: int, seed: int, pad_id: int, dtype: str = "float32"
) -> list[float]:
    """Supervised training on the response tokens; AdamW, linear warm-up then cosine decay. Returns the losses.

    The model's own ``forward`` is not used: :func:`_response_loss` computes the same loss with the same
    parameters (checked against it in the tests) but without padding masks (right padding under a causal mask
    never reaches a real token), with one matrix product for q/k/v and one for gate/up, and with logits only where
    a response token is predicted. Batches are built once, as tensors, before the loop.
    """
    import torch

    if not examples or steps == 0:
        return []
    torch.manual_seed(seed)
    rng = random.Random(seed)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    except (RuntimeError, TypeError):  # a torch without the fused CPU kernel
        opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        frac = (step - spec.warmup_steps) / max(1, steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    torch_dtype = getattr(torch, dtype)
    rope = _Rope(model.config, spec.max_positions, torch_dtype)
    batches: list[tuple[Any, Any, Any]] = []
    losses = []
    model.train()
    t0 = time.time()
    for step in range(steps):
        if not batches:
            order = _length_batches([len(ids) for ids, _ in examples], spec.batch_size, rng)
            batches = [_batch_tensors([examples[i] for i in b], pad_id) for b in order]
        ids, where, targets = batches.pop()
        loss = _response_loss(model, ids, where, targets, rope, torch_dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach())
        if step % 100 == 0 or step == steps - 1:
            log.info("warm start step %d/%d loss %.3f (%.0f s)", step + 1, steps, losses[-1].item(), time.time() - t0)
    model.eval()
    return [float(x) for x in torch.stack(losses).tolist()]


def _batch_tensors(batch: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, Any, Any]:
    """(ids [B, W] right-padded, boolean [B, W-1] marking positions whose next token is a response token,
    those next tokens) for one batch."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    where = torch.zeros((len(batch), width - 1), dtype=torch.bool)
    for row, (seq, start) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        where[row, max(0, start - 1) : len(seq) - 1] = True
    return ids, where, ids[:, 1:][where]


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


def _length_batches(lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches of similar lengths (less padding, so less CPU time), in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for i in range(0, len(order), 16 * size):
        chunk = sorted(order[i : i + 16 * size], key=lengths.__getitem__)
        batches += [chunk[j : j + size] for j in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches


def build_tiny_model(out_dir: str | Path, seed: int = 0, steps: int | None = None, dtype: str | None = None) -> Path:
    """Build (or reuse, when cached) the tiny model in ``out_dir``; return the folder.

    ``dtype``: the warm start's compute precision (``auto``, ``float32``, ``bfloat16``; default ``TinySpec.dtype``).
    Cached: when ``out_dir/build_info.json`` records the same seed, steps, precision and code version, nothing is
    rebuilt. The folder is written next to its final place and renamed in, so an interrupted build leaves no half
    model. ``build_info.json`` records the sha256 of every other file written and what built it (library versions,
    whether the CPU multiplies bfloat16 natively): on another kind of CPU the same build gives other weights.
    """
    import torch
    from transformers import GenerationConfig

    spec = TinySpec()
    steps = spec.steps if steps is None else steps
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = Path(out_dir)
    # The precision is part of the cache key: bfloat16 and float32 builds of the same seed differ.
    info = {"seed": seed, "steps": steps, "code_version": _code_version(spec), "dtype": compute_dtype(dtype or spec.dtype)}
    info_path = out / "build_info.json"
    if info_path.is_file():
        old = json.loads(info_path.read_text())
        if all(old.get(k) == v for k, v in info.items()) and (out / "model.safetensors").is_file():
            log.info("tiny model in %s is up to date (seed %d, %d steps); reusing it", out, seed, steps)
            return out
    if out.exists() and any(out.iterdir()) and not info_path.is_file():
        raise FileExistsError(f"{out} exists and is not a tiny-model folder (no build_info.json); choose another --out")

    t0 = time.time()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            templates = PromptTemplates.load(TEMPLATES_DIR)
            # About two passes over the data; short builds (tests) need fewer tasks.
            n_tasks = min(spec.warm_tasks, max(200, steps * spec.batch_size // 4))
            tasks = synthetic.generate_tasks(n_tasks, seed, "train")
            rng = random.Random(seed)
            tok = train_tokenizer(tokenizer_corpus(tasks[:1500], templates), spec.vocab_size, tmp)
            pairs = sft_pairs(
                tasks, tok, templates, rng, spec.p_example, spec.tests_per_task,
                spec.code_share, spec.wrong_code_share, spec.wrong_test_share,
            )
            examples = _encode_pairs(pairs, tok)
            model = new_model(tok, spec, seed)
            n_params = sum(p.numel() for p in model.parameters())
            log.info("tiny model: %.2f M parameters, %d warm-start examples, %d steps", n_params / 1e6, len(examples), steps)
            losses = warm_start(model, examples, spec, steps, seed, tok.pad_token_id, info["dtype"])
            model.generation_config = GenerationConfig(
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tok.pad_token_id,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                max_new_tokens=128,
            )
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            shutil.copytree(TEMPLATES_DIR, tmp / "prompts", dirs_exist_ok=True)
            (tmp / "README.md").write_text(_readme(n_params, steps, seed))
            (tmp / SETTINGS_FILE).write_text(json.dumps({"config": MODEL_SETTINGS}, indent=2) + "\n")
            stats = {**info, "parameters": n_params, "examples": len(examples), "spec": asdict(spec),
                     "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])), "seconds": round(time.time() - t0, 1),
                     "built_with": _build_environment(), "files": file_checksums(tmp)}
            (tmp / "build_info.json").write_text(json.dumps(stats, indent=2))
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        torch.set_num_threads(threads_before)
    log.info("tiny model written to %s in %.0f s", out, time.time() - t0)
    return out


def file_checksums(folder: str | Path) -> dict[str, str]:
    """sha256 of every file of a model folder but ``build_info.json``, by path relative to the folder."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "build_info.json"
    }


def _build_environment() -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "native_bfloat16": native}


def tiny_model(spec: str, cache_dir: str | Path | None = None) -> Path:
    """The folder of ``tiny[:SEED[:STEPS]]``: the shipped model for ``tiny`` and ``tiny:0`` (identical on every
    machine), otherwise a build cached under ``cache_dir`` (default ``$CURE_CACHE`` or ``~/.cache/cure``)."""
    parts = spec.split(":")
    if parts[0] != "tiny" or len(parts) > 3:
        raise ValueError(f"tiny model {spec!r}: expected tiny[:SEED[:STEPS]], e.g. tiny:0 or tiny:0:40")
    try:
        seed = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        steps = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise ValueError(f"tiny model {spec!r}: SEED and STEPS must be integers") from None
    if seed == 0 and steps is None and (SHIPPED_DIR / "model.safetensors").is_file():
        log.info("tiny model: the shipped one in %s", SHIPPED_DIR)
        return SHIPPED_DIR
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("CURE_CACHE", Path.home() / ".cache" / "cure"))
    name = f"tiny-seed{seed}" + (f"-steps{steps}" if steps else "")
    return build_tiny_model(cache / name, seed=seed, steps=steps)


def _readme(n_params: int, steps: int, seed: int) -> str:
    return (
        "# CURE offline tiny model\n\n"
        f"Qwen2ForCausalLM, {n_params / 1e6:.2f} M parameters, byte-level BPE (Qwen2 pre-tokenizer), "
        f"warm-started for {steps} steps (seed {seed}) on the synthetic train split (cure.synthetic).\n"
        "It was trained with the short prompt templates in `prompts/` and its chat template, with tester prompts that "
        f"never show the public example: `{SETTINGS_FILE}` says so, and every `cure` command given this folder uses "
        "these settings unless told otherwise (`prompts/` is the default `rollout.prompt_dir`).\n"
    )


# --- measuring the starting point -----------------------------------------------------------------------


def sample(model: Any, tokenizer: Any, prompts: list[str], n: int, max_new_tokens: int = 128, seed: int = 0, batch: int = 64) -> list[list[str]]:
    """``n`` responses per prompt at temperature 1.0, top-p 1.0 (batched, left padding), stopping at eos."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    flat = [p for p in prompts for _ in range(n)]
    texts: list[str] = []
    for i in range(0, len(flat), batch):
        enc = tokenizer(flat[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
        texts += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def same_program(code: str, reference: str) -> bool:
    """True when ``code`` parses to the same AST as the reference: a sound, execution-free check of correctness
    (it can only under-count: a correct program written differently counts as wrong)."""
    try:
        return ast.dump(ast.parse(code)) == ast.dump(ast.parse(reference))
    except (SyntaxError, ValueError):
        return False


def judge_test(task: Task, test: dict[str, str] | None) -> tuple[bool, bool]:
    """(correct, discriminative) for a generated test: correct when the reference's output matches;
    discriminative when it is correct and at least one typical wrong program prints something else."""
    if test is None:
        return False, False
    expected = synthetic.expected_output(task, test["input"])
    if expected is None or not synthetic.outputs_match(test["output"], expected):
        return False, False
    fam, params = synthetic._task_params(task)
    for m in fam.mutants(params):
        try:
            wrong = fam.solve(m, test["input"])
        except (ValueError, TypeError, IndexError, OverflowError):
            return True, True
        if not synthetic.outputs_match(wrong, expected):
            return True, True
    return True, False


def measure(
    model_dir: str | Path, n_tasks: int = 64, k: int = 4, seed: int = 1, with_example: bool = False, sandbox: bool = True
) -> dict[str, Any]:
    """Starting competence of a built model on held-out synthetic tasks (see :func:`measure_model`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    torch.set_num_threads(TinySpec.threads)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.eval()
    templates = PromptTemplates.load(model_dir / "prompts")
    tasks = synthetic.generate_tasks(n_tasks, seed, "heldout")
    return measure_model(model, tok, templates, tasks, k, seed, with_example, sandbox=sandbox)


def measure_model(
    model: Any,
    tok: Any,
    templates: PromptTemplates,
    tasks: list[Task],
    k: int,
    seed: int,
    with_example: bool = False,
    batch: int = 64,
    sandbox: bool = False,
) -> dict[str, Any]:
    """Sample ``k`` programs and ``k`` tests per task (temperature 1.0) and score them without running model code.

    Code accuracy: share of sampled programs whose AST equals the reference's (a lower bound of the executed
    accuracy); with ``sandbox``, also the share passing every ground-truth test when run by the execute stage
    in gVisor (``code_acc_executed``). Unit-test accuracy: share of sampled tests whose output matches the reference's output on their
    input (tests are data; the reference semantics run in-process), and the share of those that are
    discriminative. Also the share of well-formed responses, and the sampled texts.
    """
    code_prompts = [code_prompt(t.question, tok, templates) for t in tasks]
    tprompts = [
        test_prompt(t.question, t.example_input if with_example else None, t.example_output if with_example else None, tok, templates)
        for t in tasks
    ]
    codes = sample(model, tok, code_prompts, k, seed=seed, batch=batch)
    tests = sample(model, tok, tprompts, k, seed=seed + 1, batch=batch)
    per_family: dict[str, list[float]] = {}
    n_code_ok = n_code_form = n_test_ok = n_test_disc = n_test_form = 0
    for task, cs, ts in zip(tasks, codes, tests):
        ref = synthetic.reference_solution(task)
        ok = 0
        for c in cs:
            code, _ = extract_code(c)
            n_code_form += code is not None
            ok += code is not None and same_program(code, ref)
        n_code_ok += ok
        per_family.setdefault(task.source, []).append(ok / k)
        for t in ts:
            test, _ = extract_test(t)
            n_test_form += test is not None
            correct, disc = judge_test(task, test)
            n_test_ok += correct
            n_test_disc += disc
    total = len(tasks) * k
    executed = _executed_code_acc(tasks, codes) if sandbox else None
    return {
        "tasks": len(tasks),
        "k": k,
        "code_acc": n_code_ok / total,
        "code_acc_executed": executed,
        "code_well_formed": n_code_form / total,
        "unit_test_acc": n_test_ok / total,
        "discriminative_share": n_test_disc / max(1, n_test_ok),
        "test_well_formed": n_test_form / total,
        "per_family_code_acc": {f: round(sum(v) / len(v), 3) for f, v in sorted(per_family.items())},
        "responses": {"code": codes, "test": tests},
    }


def _executed_code_acc(tasks: list[Task], responses: list[list[str]]) -> float:
    """Share of sampled programs passing all ground-truth tests, run only through the gVisor sandbox."""
    rollouts = [
        {
            "task_id": t.task_id,
            "codes": [extract_code(r)[0] for r in rs],
            "gt_tests": [{"input": i, "output": o} for i, o in zip(t.test_input, t.test_output)],
            "tests": [],
            "time_limit_s": t.test_time_limit,
        }
        for t, rs in zip(tasks, responses)
    ]
    tables = execute_rollouts(rollouts, ExecuteConfig(isolation="gvisor"), progress=False)
    rows = [all(row) for table in tables for row in table["passed"]]
    return sum(rows) / max(1, len(rows))


# --- CLI ------------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the model (reused when already built with the same seed/steps/code)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tokenizer data, initialisation and warm start")
    parser.add_argument("--steps", type=int, default=None, help=f"warm-start optimizer steps (default {TinySpec.steps})")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default=None,
                        help=f"warm-start compute precision (default auto, or ${DTYPE_ENV}): bfloat16 where the CPU "
                        "multiplies it natively, else float32; the saved weights are float32 either way")
    parser.add_argument("--measure", action="store_true", help="then sample on held-out synthetic tasks and print the starting accuracy")
    parser.add_argument("--measure-tasks", type=int, default=64, help="--measure: held-out tasks")
    parser.add_argument("--measure-k", type=int, default=4, help="--measure: programs and tests sampled per task")
    parser.add_argument("--no-sandbox", action="store_true", help="--measure: skip running programs in gVisor (AST check only)")


def run_cli(args: argparse.Namespace, cfg: CureConfig) -> int:
    out = build_tiny_model(args.out, seed=args.seed, steps=args.steps, dtype=args.dtype)
    print(out)
    shipped = SHIPPED_DIR / "build_info.json"
    if shipped.is_file() and (args.steps in (None, TinySpec.steps)) and args.seed == 0:
        same = file_checksums(out).get("model.safetensors") == json.loads(shipped.read_text())["files"]["model.safetensors"]
        log.info("the weights %s the shipped model's (%s)", "equal" if same else "differ from", SHIPPED_DIR)
    if args.measure:
        result = measure(out, n_tasks=args.measure_tasks, k=args.measure_k, sandbox=not args.no_sandbox)
        result.pop("responses")
        print(json.dumps(result, indent=2))
    return 0


configure_parser_tiny = configure_parser
run_cli_tiny = run_cli
