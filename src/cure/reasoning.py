"""Long chain-of-thought responses: where programs and tests are read from a response.

Reasoning models (Qwen3, the paper's ReasonFlux-Coder-4B) think inside ``<think>...</think>`` before they answer.
The reasoning often holds drafts (a ```` ```python ```` block that was later fixed, a test the model then
rejected). ``rollout.extraction`` says what extraction reads (:data:`EXTRACTIONS`):

* ``reference`` (the default): the whole response, as the reference's ``extract_code`` and
  ``extract_test_cases`` do; the last block wins wherever it is, so an answer's block beats a draft before it, but
  a response whose thought never closed (the model ran out of tokens) still yields the draft inside it;
* ``after_think``: only the answer after the last ``</think>``:

  - ``</think>`` present: the answer is the text after its last occurrence (a chat template that opens the
    ``<think>`` block in the prompt leaves only the closing tag in the response);
  - ``<think>`` present but never closed: there is no answer (reason ``unfinished_think``), even if a draft inside
    the reasoning looks complete;
  - neither tag: the whole response is the answer (a model that does not think).

Both read a response without either tag the same way. The response length used by the length-aware reward
(``reward.enable_efficient``) stays the whole response's, reasoning included: that is what the reward makes
shorter.
"""

from __future__ import annotations

from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EXTRACTIONS = ("reference", "after_think")
Extraction = Literal["reference", "after_think"]


def split_reasoning(response: str) -> tuple[str | None, str | None]:
    """The answer part of ``response``: ``(answer, None)``, or ``(None, "unfinished_think")`` when the
    reasoning was never closed."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1], None
    if THINK_OPEN in response:
        return None, "unfinished_think"
    return response, None


def extractable(response: str, extraction: Extraction = "reference") -> tuple[str | None, str | None]:
    """The text extraction reads under ``extraction`` (module docstring): ``(text, None)`` or ``(None, reason)``."""
    if extraction == "reference":
        return response, None
    if extraction == "after_think":
        return split_reasoning(response)
    raise ValueError(f"unknown extraction {extraction!r}: choose one of {', '.join(EXTRACTIONS)}")


def reasoning_share(response: str) -> float:
    """Share of the response's characters spent inside the reasoning (0 for a model that does not think)."""
    if not response or THINK_CLOSE not in response:
        return 1.0 if THINK_OPEN in response else 0.0
    head = response.rsplit(THINK_CLOSE, 1)[0]
    return (len(head) + len(THINK_CLOSE)) / len(response)
