"""The offline tiny model: tokenizer reload through AutoTokenizer, determinism, caching, and a loadable model.

The starting accuracy of the full build is measured in the README/report, not asserted here; this file uses
short warm starts to stay fast, and checks what must hold at any length: the checkpoint loads through the
standard ``from_pretrained`` path, generation stops at ``<|im_end|>``, and responses are well formed.
"""

from __future__ import annotations

import json
import random
import time

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from cure import synthetic, tiny
from cure.prompts import PromptTemplates, code_prompt, extract_code, extract_test, test_prompt
from cure_cli import main

PROBES = [
    "Read an integer n. Print n*7+3.",
    "```python\nn = int(input())\nprint(n*7+3)\n```",
    "naïve café, 東京 and tabs\tand\r\nCRLF 1234567890 !!",
    "e\u0301 composed by NFC",
    "<|im_start|>user\nhi<|im_end|>\n",
    "   leading spaces and trailing   ",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    tasks = synthetic.generate_tasks(120, 0)
    pairs = tiny.sft_pairs(tasks, tiny.tokenizer._ChatML(), PromptTemplates.load(tiny.TEMPLATES_DIR), random.Random(0), 0.5)
    out = tmp_path_factory.mktemp("tok")
    tiny.train_tokenizer([p + r for p, r in pairs], 400, out)
    return out


def test_tokenizer_reloads_identically_through_autotokenizer(tok_dir, tmp_path):
    raw = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert type(tok).__name__ == "Qwen2Tokenizer"
    for text in PROBES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(text).ids, text
        assert tok.decode(ids) == raw.decode(ids, skip_special_tokens=False)
    assert tok.decode(tok("naïve 東京 1234")["input_ids"]) == "naïve 東京 1234"
    # Qwen2's pre-tokenizer: digits one by one; NFC normalisation.
    assert len(tok("12345", add_special_tokens=False)["input_ids"]) == 5
    assert tok("e\u0301")["input_ids"] == tok("\u00e9")["input_ids"]
    for special in tiny.SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    chat = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    # A save_pretrained -> from_pretrained cycle (what checkpoints go through) keeps the encoding.
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in PROBES:
        assert again(text)["input_ids"] == tok(text)["input_ids"]


@pytest.mark.slow
def test_build_is_deterministic_given_the_seed(tmp_path):
    a = tiny.build_tiny_model(tmp_path / "a", seed=3, steps=2)
    b = tiny.build_tiny_model(tmp_path / "b", seed=3, steps=2)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    tok = AutoTokenizer.from_pretrained(str(a))
    spec = tiny.TinySpec()
    w3, w4 = (tiny.new_model(tok, spec, s).model.embed_tokens.weight for s in (3, 4))
    assert not torch.equal(w3, w4)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tiny-model folder"):
        tiny.build_tiny_model(tmp_path, steps=1)


@pytest.mark.slow
def test_cli_builds_a_loadable_model_that_writes_well_formed_answers(tmp_path, capsys):
    out = tmp_path / "tiny"
    # 300 steps: enough for the response format (not for the starting accuracy, which the full build gives).
    assert main(["model", "tiny", "--out", str(out), "--seed", "0", "--steps", "300"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "prompts").iterdir()) == sorted(p.name for p in tiny.TEMPLATES_DIR.iterdir())
    info = json.loads((out / "build_info.json").read_text())
    assert info["steps"] == 300 and info["seed"] == 0

    # Cached: the same seed, steps and code reuse the folder as is.
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    assert tiny.build_tiny_model(out, seed=0, steps=300) == out
    assert time.monotonic() - started < 5
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == end

    templates = PromptTemplates.load(out / "prompts")
    tasks = synthetic.generate_tasks(16, 0, "heldout")
    prompts = [code_prompt(t.question, tok, templates) for t in tasks]
    prompts += [test_prompt(t.question, None, None, tok, templates) for t in tasks]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad():
        gen = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=96)
    new = gen[:, enc["input_ids"].shape[1] :]
    stopped = 0
    for row in new.tolist():
        if end in row:
            stopped += 1
            # Nothing but padding after the end of the turn.
            assert set(row[row.index(end) + 1 :]) <= {tok.pad_token_id}
    assert stopped >= 0.75 * len(prompts)
    texts = tok.batch_decode(new, skip_special_tokens=True)
    codes = [extract_code(t)[0] for t in texts[:16]]
    tests = [extract_test(t)[0] for t in texts[16:]]
    assert sum(c is not None for c in codes) >= 10, texts[:16]
    assert sum(t is not None for t in tests) >= 10, texts[16:]


def test_warm_start_pairs_hold_correct_discriminative_tests():
    tasks = synthetic.generate_tasks(40, 5)
    templates = PromptTemplates.load(tiny.TEMPLATES_DIR)
    pairs = tiny.sft_pairs(tasks, tiny.tokenizer._ChatML(), templates, random.Random(1), 0.5, tests_per_task=2)
    assert len(pairs) == 3 * len(tasks)
    shown = 0
    for i, task in enumerate(tasks):
        code, test_a, test_b = pairs[3 * i : 3 * i + 3]
        assert extract_code(code[1])[0] == synthetic.reference_solution(task)
        for prompt, response in (test_a, test_b):
            test = extract_test(response)[0]
            # Every warm-start test is one the judge counts as correct and discriminative.
            assert tiny.judge_test(task, test) == (True, True), (task.question, test)
            shown += "We already have one test sample" in prompt
    assert 0 < shown < 2 * len(tasks)  # the public example is shown in some tester prompts, not all
    # code_share: coder examples for the first share of the tasks only, which still cover every family.
    half = tiny.sft_pairs(tasks, tiny.tokenizer._ChatML(), templates, random.Random(1), 0.5, tests_per_task=1, code_share=0.5)
    coder = [p for p in half if p[1].startswith("```python")]
    assert len(coder) == 20 and len(half) == 60
    assert {t.family for t in tasks[:20]} == set(synthetic.FAMILIES)


def test_warm_start_can_show_typical_wrong_programs():
    """wrong_code_share / wrong_test_share: that share of coder examples shows one of the task's typical wrong
    programs, and that share of tester examples a wrong program's output (so both roles start imperfect the way a
    base model is); the rest show the reference program and correct, discriminative tests."""
    tasks = synthetic.generate_tasks(400, 5)
    templates = PromptTemplates.load(tiny.TEMPLATES_DIR)
    pairs = tiny.sft_pairs(
        tasks, tiny.tokenizer._ChatML(), templates, random.Random(1), 0.5, tests_per_task=1, wrong_code_share=0.3, wrong_test_share=0.2
    )
    wrong = wrong_tests = 0
    for i, task in enumerate(tasks):
        (_, code), (_, test) = pairs[2 * i : 2 * i + 2]
        program = extract_code(code)[0]
        if program != synthetic.reference_solution(task):
            assert program in synthetic.wrong_solutions(task), (task.question, program)
            wrong += 1
        verdict = tiny.judge_test(task, extract_test(test)[0])
        if verdict[0]:
            assert verdict == (True, True)
        else:
            wrong_tests += 1
    assert 0.25 < wrong / len(tasks) < 0.35, wrong
    assert 0.15 < wrong_tests / len(tasks) < 0.25, wrong_tests


def _hf_loss(model, batch, pad_id):
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (seq, start) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, start : len(seq)] = torch.tensor(seq[start:])
        mask[row, : len(seq)] = 1
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def test_warm_start_loss_equals_the_models_own_loss(tok_dir):
    """The warm start's functional loss (no padding mask, fused projections, logits only on response tokens)
    is the model's own ``forward(labels=...)`` loss, with the same gradients, on right-padded rows of mixed length."""
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    spec = tiny.TinySpec()
    model = tiny.new_model(tok, spec, 0)
    with torch.no_grad():  # non-trivial biases and norms
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tasks = synthetic.generate_tasks(8, 1)
    pairs = tiny.sft_pairs(tasks, tok, PromptTemplates.load(tiny.TEMPLATES_DIR), random.Random(0), 0.5, wrong_test_share=0.5)
    batch = tiny.sft._encode_pairs(pairs, tok)
    assert len({len(ids) for ids, _ in batch}) > 1
    ref = _hf_loss(model, batch, tok.pad_token_id)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    mine = tiny.model._response_loss(model, *tiny.warm_start._batch_tensors(batch, tok.pad_token_id), tiny.model._Rope(model.config, spec.max_positions))
    mine.backward()
    assert abs(ref.item() - mine.item()) < 1e-5
    for a, p in zip(ref_grads, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_bfloat16_warm_start_loss_tracks_float32(tok_dir):
    """Mixed precision by hand: bfloat16 products, float32 parameters, gradients and loss. The loss stays within
    bfloat16's rounding of the float32 loss and the gradient points the same way."""
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    spec = tiny.TinySpec()
    model = tiny.new_model(tok, spec, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tasks = synthetic.generate_tasks(8, 1)
    pairs = tiny.sft_pairs(tasks, tok, PromptTemplates.load(tiny.TEMPLATES_DIR), random.Random(0), 0.5)
    batch = tiny.warm_start._batch_tensors(tiny.sft._encode_pairs(pairs, tok), tok.pad_token_id)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.zero_grad()
        loss = tiny.model._response_loss(model, *batch, tiny.model._Rope(model.config, spec.max_positions, dtype), dtype)
        assert loss.dtype == torch.float32
        loss.backward()
        grads[dtype] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    (l32, g32), (l16, g16) = grads[torch.float32], grads[torch.bfloat16]
    assert g16.dtype == torch.float32
    assert abs(l32 - l16) < 0.02 * l32
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_compute_dtype_choices():
    assert tiny.compute_dtype("float32") == "float32" and tiny.compute_dtype("bfloat16") == "bfloat16"
    assert tiny.compute_dtype("auto") in ("float32", "bfloat16")
    with pytest.raises(ValueError, match="auto, float32 or bfloat16"):
        tiny.compute_dtype("fp8")


def test_compute_dtype_env_forces_the_path_a_cpu_without_bfloat16_takes(monkeypatch, tmp_path):
    monkeypatch.setenv(tiny.DTYPE_ENV, "float32")
    assert tiny.compute_dtype("auto") == "float32"
    assert tiny.compute_dtype("bfloat16") == "bfloat16"  # an explicit choice wins over the environment
    out = tiny.build_tiny_model(tmp_path / "m", seed=3, steps=2)
    assert json.loads((out / "build_info.json").read_text())["dtype"] == "float32"
    monkeypatch.setenv(tiny.DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match=tiny.DTYPE_ENV):
        tiny.compute_dtype("auto")


@pytest.mark.slow
def test_a_build_records_its_files_and_says_how_to_prompt_it(tmp_path):
    out = tiny.build_tiny_model(tmp_path / "m", seed=3, steps=2, dtype="float32")
    info = json.loads((out / "build_info.json").read_text())
    assert info["files"] == tiny.file_checksums(out)
    assert {"model.safetensors", "tokenizer.json", "cure.json", "prompts/tester_user.j2"} <= set(info["files"])
    assert json.loads((out / "cure.json").read_text()) == {"config": tiny.MODEL_SETTINGS}
    assert set(info["built_with"]) == {"torch", "transformers", "tokenizers", "native_bfloat16"}


# --- the shipped model (tiny:0) --------------------------------------------------------------------------


def test_the_shipped_model_is_the_one_its_build_recorded():
    """Every file of src/cure/models/tiny has the sha256 its build wrote down, and no file is missing or added."""
    info = json.loads((tiny.SHIPPED_DIR / "build_info.json").read_text())
    assert tiny.file_checksums(tiny.SHIPPED_DIR) == info["files"]


def test_the_shipped_model_is_what_the_current_build_code_makes():
    """Its build's code hash is today's: a change to the build (code, synthetic tasks, templates, spec) must rebuild
    and ship it (`rm -rf src/cure/models/tiny && cure model tiny --out src/cure/models/tiny --dtype bfloat16`) and
    re-measure the demo, or `cure model tiny` and `tiny:0` would be different models."""
    info = json.loads((tiny.SHIPPED_DIR / "build_info.json").read_text())
    assert (info["seed"], info["steps"]) == (0, tiny.TinySpec.steps)
    assert info["code_version"] == tiny.build._code_version(tiny.TinySpec())


@pytest.mark.slow
def test_tiny_0_is_the_shipped_model_and_other_specs_build(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny.build, "build_tiny_model", lambda *a, **k: pytest.fail(f"built {a} {k}"))
    assert tiny.tiny_model("tiny:0", tmp_path) == tiny.tiny_model("tiny", tmp_path) == tiny.SHIPPED_DIR
    monkeypatch.undo()
    built = tiny.tiny_model("tiny:3:2", tmp_path)
    assert built == tmp_path / "tiny-seed3-steps2" and (built / "model.safetensors").is_file()
    for bad in ("tiny:x", "tiny:0:1:2", "tinyx"):
        with pytest.raises(ValueError, match="tiny"):
            tiny.tiny_model(bad, tmp_path)


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_model():
    """pyproject's package data covers every file of the shipped model, so an installed wheel has tiny:0 too."""
    import fnmatch
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cure"]
    package = root / "src" / "cure"
    files = [p.relative_to(package).as_posix() for p in tiny.SHIPPED_DIR.rglob("*") if p.is_file()]
    assert "models/tiny/model.safetensors" in files
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)] == []


@pytest.mark.slow
def test_a_pipeline_starting_from_tiny_0_gets_the_shipped_weights(tmp_path):
    from cure import stages

    stages.init_model("tiny:0", str(tmp_path / "start"))
    assert (tmp_path / "start" / "model.safetensors").read_bytes() == (tiny.SHIPPED_DIR / "model.safetensors").read_bytes()
    assert (tmp_path / "start" / "cure.json").is_file() and (tmp_path / "start" / "prompts").is_dir()
