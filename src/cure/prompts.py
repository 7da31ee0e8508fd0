"""CURE's coder and tester prompts, and extraction of programs and tests from responses.

The wording is the reference code's (Gen-Verse/CURE ``optimization_config.py``; at evaluation its
``evaluation_config.py``, whose coder prompt adds one sentence), kept as editable Jinja2 templates in
``cure/templates/`` (system + user message per role). Two layouts put them around the model's turn:

* ``reference`` (the default of ``rollout.prompt_layout``): the reference's literal strings, whitespace included,
  ``<|im_start|>SYSTEM <|im_end|>\n<|im_start|>User: USER <|im_end|>\n<|im_start|>Assistant: ``, whatever the
  tokenizer (the reference renders its prompt strings with jinja2 and never applies a chat template);
* ``chat_template``: the tokenizer's chat template applied to (system, user) messages with a generation prompt
  (the tester's example sentence keeps a final newline there, as this project always rendered it).

A template file's final newline is not part of the template (the built-in tester template ends with a blank line,
which gives the reference's ``explanation here.\n <|im_end|>``).

Extraction never raises: a malformed response gives ``None`` plus a short reason, which the rollout stage counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, StrictUndefined

from cure.reasoning import Extraction, extractable

SPECIAL_REQUIREMENTS = "You should use input() to input and print() to output in your script. "
# The evaluation's coder wording (reference ``evaluation/evaluation_config.py``): one more sentence, no final space.
EVAL_SPECIAL_REQUIREMENTS = (
    "You should use input() to input and print() to output in your script. "
    "Your code should output the results based on the input read in, rather than generating the given test example."
)
LAYOUTS = ("reference", "chat_template")
Layout = Literal["reference", "chat_template"]
Wording = Literal["training", "evaluation"]

_env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def _strip_final_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


@cache
def _compiled(source: str) -> Any:
    """A template compiled once per text (compiling costs more than rendering)."""
    return _env.from_string(source)


@cache
def _builtin(name: str) -> str:
    return _strip_final_newline(resources.files("cure").joinpath("templates", f"{name}.j2").read_text(encoding="utf-8"))


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
            texts[n] = _strip_final_newline(custom.read_text(encoding="utf-8")) if custom and custom.is_file() else _builtin(n)
        return cls(**texts)


def example_intro(example_input: list[str], example_output: list[str], final_newline: bool = False) -> str:
    """The tester prompt's sentence about public examples (reference ``get_scaling_prompt``).

    The reference renders this sentence through a jinja2 ``Template``, which drops the template's final newline,
    so the sentence ends with the period (``final_newline=True`` keeps the newline: the text the offline tiny
    model was trained on).
    """
    n = len(example_input)
    ins = ", ".join(repr(x) for x in example_input)
    outs = ", ".join(repr(x) for x in example_output)
    if n == 0:
        return " "
    end = "\n" if final_newline else ""
    if n == 1:
        return f"We already have one test sample:\n Its input is {ins}. Its output is {outs}.{end}"
    return (
        f"We already have {n} test samples:\n The inputs are, respectively, {ins}. "
        f"The corresponding outputs are {outs}.{end}"
    )


def reference_layout(system: str, user: str) -> str:
    """The reference's literal prompt layout around a system and a user text (``optimization_config.py``)."""
    return f"<|im_start|>{system} <|im_end|>\n<|im_start|>User: {user} <|im_end|>\n<|im_start|>Assistant: "


def _render(system: str, user: str, tokenizer: Any | None, layout: Layout | None) -> Any:
    has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if layout is None:  # library default: the tokenizer's chat template when it has one
        layout = "chat_template" if has_template else "reference"
    if layout == "reference":
        return reference_layout(system, user)
    if layout != "chat_template":
        raise ValueError(f"unknown prompt layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if not has_template:
        raise ValueError("prompt layout 'chat_template' needs a tokenizer with a chat template; this one has none "
                         "(set rollout.prompt_layout=reference, or use the model's own tokenizer)")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)  # type: ignore[union-attr]


def code_prompt(
    question: str,
    tokenizer: Any | None = None,
    templates: PromptTemplates | None = None,
    layout: Layout | None = None,
    wording: Wording = "training",
) -> str:
    """The coder prompt for one task.

    ``layout`` None uses the tokenizer's chat template when it has one, else the reference layout (the rollout
    stage always passes ``rollout.prompt_layout``). ``wording="evaluation"`` adds the evaluation's sentence.
    """
    t = templates or PromptTemplates.load()
    special = EVAL_SPECIAL_REQUIREMENTS if wording == "evaluation" else SPECIAL_REQUIREMENTS
    user = _compiled(t.coder_user).render(language="python", special_requirements=special, problem=question)
    return _render(_compiled(t.coder_system).render(), user, tokenizer, layout)


def test_prompt(
    question: str,
    example_input: list[str] | None = None,
    example_output: list[str] | None = None,
    tokenizer: Any | None = None,
    templates: PromptTemplates | None = None,
    layout: Layout | None = None,
) -> str:
    """The tester prompt for one task, showing the given public examples (none: the no-example variant).

    Only the ``reference`` layout renders the example sentence exactly as the reference (no final newline); the
    others keep the newline they always had, which is what the offline tiny model is trained on (:mod:`cure.tiny`:
    ``layout`` None, its chat template).
    """
    t = templates or PromptTemplates.load()
    intro = example_intro(list(example_input or []), list(example_output or []), final_newline=layout != "reference")
    user = _compiled(t.tester_user).render(problem=question, example_intro=intro)
    return _render(_compiled(t.tester_system).render(), user, tokenizer, layout)


test_prompt.__test__ = False  # not a pytest test despite the name


# --- extraction -----------------------------------------------------------------------------------------

_CODE = re.compile(r"```python(.*?)```", re.DOTALL)
_IN_FENCED = re.compile(r"\*\*Test Input:\*\*\s*```(.*?)```", re.DOTALL)
_OUT_FENCED = re.compile(r"\*\*Test Output:\*\*\s*```(.*?)```", re.DOTALL)
_IN_PLAIN = re.compile(r"\*\*Test Input:\*\*\s*([\s\S]*?)(?=\*\*Test Output:\*\*)", re.DOTALL)
_OUT_PLAIN = re.compile(r"\*\*Test Output:\*\*\s*([\s\S]*?)(?=\*\*Explanation:|\*\*Test Input:|$)", re.DOTALL)


def extract_code(response: str, extraction: Extraction = "reference") -> tuple[str | None, str | None]:
    """The last fenced ```python block, stripped (reference ``extract_code``): anywhere in the response, or with
    ``extraction="after_think"`` in the answer after any ``</think>`` reasoning (:mod:`cure.reasoning`).
    Returns (code, None) or (None, reason)."""
    answer, why = extractable(response, extraction)
    if answer is None:
        return None, why
    matches = _CODE.findall(answer)
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


def extract_test(response: str, extraction: Extraction = "reference") -> tuple[dict[str, str] | None, str | None]:
    """A generated unit test from ``**Test Input:**`` / ``**Test Output:**`` blocks (fenced, else plain text).

    Same rules and fallbacks as the reference's ``extract_test_cases``: the last fenced block of each, else the
    plain text up to the next marker; both markers must be present. The whole response is read, or with
    ``extraction="after_think"`` only the answer after any ``</think>`` reasoning (:mod:`cure.reasoning`).
    Returns ({"input", "output"}, None) or (None, reason).
    """
    answer, why = extractable(response, extraction)
    if answer is None:
        return None, why
    response = answer
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


#: How a failed run is told to the model in refinement prompts (refinement, agentic frameworks), by status.
FAILURE_TEXT = {
    "error": "It raised an error (or did not compile), so it printed nothing usable.",
    "timeout": "It ran past the time limit.",
    "memory": "It ran out of memory.",
    "output_limit": "It printed more than the output limit.",
}
