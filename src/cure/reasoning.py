"""Long chain-of-thought responses: the answer is what follows the reasoning.

Reasoning models (Qwen3, the paper's ReasonFlux-Coder-4B) think inside ``<think>...</think>`` before they answer.
The reasoning often holds drafts (a ```` ```python ```` block that was later fixed, a test the model then
rejected), so programs and tests are extracted from the answer after the last ``</think>`` only:

* ``</think>`` present: the answer is the text after its last occurrence (a chat template that opens the
  ``<think>`` block in the prompt leaves only the closing tag in the response);
* ``<think>`` present but never closed: the model ran out of tokens while thinking; there is no answer
  (reason ``unfinished_think``), even if a draft inside the reasoning looks complete;
* neither tag: the whole response is the answer (a model that does not think).

The response length used by the length-aware reward (``reward.enable_efficient``) stays the whole response's,
reasoning included: that is what the reward makes shorter.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def split_reasoning(response: str) -> tuple[str | None, str | None]:
    """The answer part of ``response``: ``(answer, None)``, or ``(None, "unfinished_think")`` when the
    reasoning was never closed."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1], None
    if THINK_OPEN in response:
        return None, "unfinished_think"
    return response, None


def reasoning_share(response: str) -> float:
    """Share of the response's characters spent inside the reasoning (0 for a model that does not think)."""
    if not response or THINK_CLOSE not in response:
        return 1.0 if THINK_OPEN in response else 0.0
    head = response.rsplit(THINK_CLOSE, 1)[0]
    return (len(head) + len(THINK_CLOSE)) / len(response)
