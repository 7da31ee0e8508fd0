"""CURE's evaluation metrics, as pure numpy (reference ``evaluation/eval.py`` and ``optimization/execute.py``).

``tables`` holds one ``(gt_pass, gen_pass)`` pair per task (bool ``[n_code, n_gt]`` and ``[n_code, n_gen]``).

* ``code_acc``: share of programs passing every ground-truth test; ``code_acc_accumulate``: share of
  (program, ground-truth test) cells passed.
* ``unit_test_acc``: over tasks with at least one correct program, share of generated tests that pass every correct
  program; ``unit_test_acc_accumulate``: share of (correct program, generated test) cells passed.
* ``p01``: share of (wrong program, correct test) pairs where the wrong program passes (the reference prints
  ``1 - p_01`` of its rejection share: this is that printed number, so with no such pair, where its
  ``safe_divide`` gives a rejection share of 0, it is 1.0, as the reference prints); ``p00``: share of (wrong
  program, wrong test) pairs where the wrong program passes (0 with no such pair). Lower is better for both.
* ``bon_{n}x{m}``: Best-of-N: among the first n programs, the one passing most of the first m generated tests (the
  first on ties, as ``argmax``) is scored on the ground-truth tests (all passed); ``bon_{n}x{m}_accumulate`` scores
  the share of ground-truth tests it passes.
* ``discriminative_test_share`` (not in the reference): share of correct generated tests (as estimated above) that
  reject at least one wrong program, over tasks with both correct and wrong programs. A tester can raise
  ``unit_test_acc`` with trivial tests; this shows whether its correct tests carry signal.

Pooling is over cells, as the reference does (sums of scores over sums of counts); an empty pool gives 0, as the
reference's ``safe_divide`` (``p01``: 1, the reference's ``1 - 0``). ``skip_untested=True`` is the reference's evaluation: a task whose table has no
generated-test column (none could be extracted; the evaluation leaves such tests out, :func:`cure.evaluate.eval_tables`)
is skipped by every metric, code metrics included. With ``skip_untested=False`` (training, code-only evaluation and
``eval.unextracted_tests=fail``) code metrics count every task with programs and ground-truth tests, as the
reference's code-only (``single_eval``) mode does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

DEFAULT_SCALES: tuple[tuple[int, int], ...] = ((4, 4), (16, 16))


class _Ratio:
    def __init__(self) -> None:
        self.num = 0.0
        self.den = 0.0

    def add(self, num: float, den: float) -> None:
        self.num += float(num)
        self.den += float(den)

    @property
    def value(self) -> float:
        return self.num / self.den if self.den else 0.0


def summarize(
    tables: Iterable[tuple[Any, Any]], scales: Sequence[tuple[int, int]] = DEFAULT_SCALES, skip_untested: bool = False
) -> dict[str, float]:
    """All CURE metrics over a set of tasks (see module docstring); also ``num_tasks``."""
    code_acc, code_cells = _Ratio(), _Ratio()
    test_acc, test_cells = _Ratio(), _Ratio()
    p01, p00, discr = _Ratio(), _Ratio(), _Ratio()
    for n, m in scales:  # eval.scales is checked at config load; a direct caller gets the same rule
        if isinstance(n, bool) or isinstance(m, bool) or int(n) != n or int(m) != m or n < 1 or m < 0:
            raise ValueError(f"Best-of-N scale ({n}, {m}): needs at least 1 program and 0 or more tests")
    bon = {s: (_Ratio(), _Ratio()) for s in scales}
    n_tasks = 0
    for gt_raw, gen_raw in tables:
        gt = np.asarray(gt_raw, dtype=bool)
        gen = np.asarray(gen_raw, dtype=bool)
        if gt.ndim != 2 or gen.ndim != 2 or gt.shape[0] != gen.shape[0]:
            raise ValueError(f"bad table shapes gt {gt.shape} gen {gen.shape}: expected [n_code, *] for both")
        if gt.shape[0] == 0 or gt.shape[1] == 0 or (skip_untested and gen.shape[1] == 0):
            continue
        n_tasks += 1
        correct = gt.all(axis=1)
        code_acc.add(correct.sum(), gt.shape[0])
        code_cells.add(gt.sum(), gt.size)
        if gen.shape[1] == 0:
            continue
        if correct.any():
            sub = gen[correct]
            test_ok = sub.all(axis=0)
            test_acc.add(test_ok.sum(), gen.shape[1])
            test_cells.add(sub.sum(), sub.size)
            wrong = ~correct
            if wrong.any():
                wrong_rows = gen[wrong]
                if test_ok.any():
                    passes = wrong_rows[:, test_ok]
                    p01.add(passes.sum(), passes.size)
                    discr.add((~passes).any(axis=0).sum(), passes.shape[1])
                if (~test_ok).any():
                    passes = wrong_rows[:, ~test_ok]
                    p00.add(passes.sum(), passes.size)
        for n, m in scales:
            votes = gen[:n, :m].sum(axis=1)
            best = int(np.argmax(votes))
            row = gt[:n][best]
            bon[(n, m)][0].add(float(row.all()), 1)
            bon[(n, m)][1].add(row.sum(), row.size)
    out = {
        "num_tasks": float(n_tasks),
        "code_acc": code_acc.value,
        "code_acc_accumulate": code_cells.value,
        "unit_test_acc": test_acc.value,
        "unit_test_acc_accumulate": test_cells.value,
        "p01": p01.value if p01.den else 1.0,  # the reference prints 1 - safe_divide(rejections, 0) = 1
        "p00": p00.value,
        "discriminative_test_share": discr.value,
    }
    for (n, m), (acc, cells) in bon.items():
        out[f"bon_{n}x{m}"] = acc.value
        out[f"bon_{n}x{m}_accumulate"] = cells.value
    return out


def tables_from_executions(executions: Iterable[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split execution records (``passed`` + ``num_gt``) into ``(gt_pass, gen_pass)`` pairs."""
    out = []
    for rec in executions:
        passed = np.asarray(rec["passed"], dtype=bool)
        t = int(rec["num_gt"])
        if passed.ndim != 2:
            passed = passed.reshape(len(rec["passed"]), -1)
        out.append((passed[:, :t], passed[:, t:]))
    return out
