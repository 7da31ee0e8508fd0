"""Building, caching and shipping the tiny model: ``tiny[:SEED[:STEPS]]`` to a ``save_pretrained`` folder.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cure import synthetic
from cure.model_settings import SETTINGS_FILE
from cure.prompts import PromptTemplates
from cure.tiny.model import _response_loss, _rms, _Rope, compute_dtype, new_model
from cure.tiny.sft import _encode_pairs, format_test, sft_pairs
from cure.tiny.spec import MODEL_SETTINGS, SHIPPED_DIR, TEMPLATES_DIR, TinySpec
from cure.tiny.tokenizer import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    _ChatML,
    qwen2_bpe,
    tokenizer_corpus,
    train_tokenizer,
)
from cure.tiny.warm_start import _batch_tensors, _length_batches, warm_start

log = logging.getLogger(__name__)


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
