"""CURE's coder and tester prompts, and extraction of programs and tests from responses.

The wording is the reference code's (Gen-Verse/CURE ``optimization_config.py``), kept as editable Jinja2
templates in ``cure/templates/`` (system + user message per role). When the tokenizer has a chat template it is
applied to (system, user) messages with a generation prompt; otherwise the reference's literal ChatML-like layout
is used (``<|im_start|>... User: ... <|im_end|>\\n<|im_start|>Assistant: ``), exactly as the reference renders it.

Extraction never raises: a malformed response gives ``None`` plus a short reason, which the rollout stage counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

SPECIAL_REQUIREMENTS = "You should use input() to input and print() to output in your script. "

_env = Environment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


@cache
def _compiled(source: str) -> Any:
    """A template compiled once per text (compiling costs more than rendering)."""
    return _env.from_string(source)


@cache
def _builtin(name: str) -> str:
    return resources.files("cure").joinpath("templates", f"{name}.j2").read_text(encoding="utf-8").rstrip("\n")


@dataclass(frozen=True)
class PromptTemplates:
    """The four templates; any can be replaced by a file (``--set rollout.prompt_dir=DIR`` holding the same names)."""

    coder_system: str
    coder_user: str
    tester_system: str
    tester_user: str

    @classmethod
    def load(cls, directory: str | Path | None = None) -> PromptTemplates:
        names = ("coder_system", "coder_user", "tester_system", "tester_user")
        texts = {}
        for n in names:
            custom = Path(directory) / f"{n}.j2" if directory else None
            texts[n] = custom.read_text(encoding="utf-8").rstrip("\n") if custom and custom.is_file() else _builtin(n)
        return cls(**texts)


def example_intro(example_input: list[str], example_output: list[str]) -> str:
    """The tester prompt's sentence about public examples (reference ``get_scaling_prompt``)."""
    n = len(example_input)
    ins = ", ".join(repr(x) for x in example_input)
    outs = ", ".join(repr(x) for x in example_output)
    if n == 0:
        return " "
    if n == 1:
        return f"We already have one test sample:\n Its input is {ins}. Its output is {outs}.\n"
    return (
        f"We already have {n} test samples:\n The inputs are, respectively, {ins}. "
        f"The corresponding outputs are {outs}.\n"
    )


def _render(system: str, user: str, tokenizer: Any | None) -> str:
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The reference's literal layout (no chat template).
    return f"<|im_start|>{system} <|im_end|>\n<|im_start|>User: {user} <|im_end|>\n<|im_start|>Assistant: "


def code_prompt(question: str, tokenizer: Any | None = None, templates: PromptTemplates | None = None) -> str:
    """The coder prompt for one task."""
    t = templates or PromptTemplates.load()
    user = _compiled(t.coder_user).render(
        language="python", special_requirements=SPECIAL_REQUIREMENTS, problem=question
    )
    return _render(_compiled(t.coder_system).render(), user, tokenizer)


def test_prompt(
    question: str,
    example_input: list[str] | None = None,
    example_output: list[str] | None = None,
    tokenizer: Any | None = None,
    templates: PromptTemplates | None = None,
) -> str:
    """The tester prompt for one task, showing the given public examples (none: the no-example variant)."""
    t = templates or PromptTemplates.load()
    intro = example_intro(list(example_input or []), list(example_output or []))
    user = _compiled(t.tester_user).render(problem=question, example_intro=intro)
    return _render(_compiled(t.tester_system).render(), user, tokenizer)


test_prompt.__test__ = False  # not a pytest test despite the name


# --- extraction -----------------------------------------------------------------------------------------

_CODE = re.compile(r"```python(.*?)```", re.DOTALL)
_IN_FENCED = re.compile(r"\*\*Test Input:\*\*\s*```(.*?)```", re.DOTALL)
_OUT_FENCED = re.compile(r"\*\*Test Output:\*\*\s*```(.*?)```", re.DOTALL)
_IN_PLAIN = re.compile(r"\*\*Test Input:\*\*\s*([\s\S]*?)(?=\*\*Test Output:\*\*)", re.DOTALL)
_OUT_PLAIN = re.compile(r"\*\*Test Output:\*\*\s*([\s\S]*?)(?=\*\*Explanation:|\*\*Test Input:|$)", re.DOTALL)


def extract_code(response: str) -> tuple[str | None, str | None]:
    """The last fenced ```python block, stripped (reference ``extract_code``). Returns (code, None) or (None, reason)."""
    matches = _CODE.findall(response)
    if not matches:
        return None, "no_python_block"
    code = matches[-1].strip()
    if not code:
        return None, "empty_python_block"
    return code, None


def _normalise_io(text: str) -> str:
    """Reference ``modify``: drop a ``plaintext`` fence tag, turn literal ``\\n`` into newlines, end with a newline."""
    text = text.replace("plaintext\n", "").replace("\\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def extract_test(response: str) -> tuple[dict[str, str] | None, str | None]:
    """A generated unit test from ``**Test Input:**`` / ``**Test Output:**`` blocks (fenced, else plain text).

    Same rules and fallbacks as the reference's ``extract_test_cases``: the last fenced block of each, else the
    plain text up to the next marker; both markers must be present. Returns ({"input", "output"}, None) or
    (None, reason).
    """
    if "**Test Input:**" not in response:
        return None, "no_test_input"
    fenced_in = _IN_FENCED.findall(response)
    if fenced_in:
        test_input = _normalise_io(fenced_in[-1].lstrip("\n"))
    else:
        plain = _IN_PLAIN.findall(response)
        if not plain:
            return None, "no_test_input"
        test_input = _normalise_io(plain[-1].strip())
    fenced_out = _OUT_FENCED.findall(response)
    if fenced_out:
        test_output = _normalise_io(fenced_out[-1].lstrip("\n"))
    else:
        plain = _OUT_PLAIN.findall(response)
        if not plain:
            return None, "no_test_output"
        test_output = _normalise_io(plain[-1].strip())
    return {"input": test_input, "output": test_output}, None
