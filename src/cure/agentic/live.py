"""The real ports: the project's rollout engines for the coder and the tester, and the project's sandbox pool.

Prompts are rendered as the rollout stage renders them (:func:`cure.rollout.stage._render_for`): the role's system
template and the step's user text in ``rollout.prompt_layout`` (chat engines get messages). Programs run in a
:class:`cure.sandbox.pool.SandboxPool` of the execution backend (:mod:`cure.backends`: the ``execute`` section's
isolation, gVisor unless told otherwise, and limits), opened once for the whole evaluation and closed at the end, as :func:`cure.refine.probe` runs them; the
evaluation namespace (``eval.exec_namespace``) applies. The Kubernetes execute backend returns no program output,
which every framework needs, so it is refused with a message.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from cure.agentic.common import Ask, Ran
from cure.backends import execution_backend
from cure.config import CureConfig
from cure.prompts import PromptTemplates, _compiled, _render
from cure.rollout.engine import Completion, SamplingParams
from cure.rollout.stage import _render_for
from cure.sandbox.pool import Job

log = logging.getLogger(__name__)


def _render_ask(system: str, user: str, default_layout: str, tokenizer: Any, layout: Any) -> Any:
    """The render function of :func:`cure.rollout.stage._render_for` for one step's prompt."""
    return _render(system, user, tokenizer, layout or default_layout)


class LivePorts:
    """Coder and tester engines (may be the same object) and a sandbox pool; use as a context manager."""

    def __init__(self, coder: Any, tester: Any, cfg: CureConfig, tokenizer: Any, templates: PromptTemplates) -> None:
        self.backend = execution_backend(cfg)
        if not self.backend.prints_output:
            raise ValueError("eval.framework needs what each program prints, which the kubernetes execute backend "
                             "does not return; set execute.backend=local for the evaluation")
        self.engines = {"coder": coder, "tester": tester}
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.systems = {"coder": _compiled(templates.coder_system).render(),
                        "tester": _compiled(templates.tester_system).render()}
        self.typing_names = cfg.eval.exec_namespace == "reference"
        self.pool: Any = None

    def __enter__(self) -> LivePorts:
        self.pool = self.backend.pool().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.__exit__(*exc)
            self.pool = None

    def sample(self, asks: list[Ask], n: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in asks]
        layout = self.cfg.rollout.prompt_layout
        for role in ("coder", "tester"):
            idx = [i for i, a in enumerate(asks) if a.role == role]
            if not idx:
                continue
            engine = self.engines[role]
            system = self.systems[role]
            prompts = [_render_for(engine, partial(_render_ask, system, asks[i].user, layout), self.tokenizer) for i in idx]
            params = SamplingParams.from_config(self.cfg.rollout, n)
            try:
                answers = engine.generate(prompts, params)
            except ValueError:  # e.g. a prompt past a small model's context: ask one by one, "" where it fails
                answers = [self._one(engine, p, params) for p in prompts]
            for i, comps in zip(idx, answers):
                out[i] = [c.text for c in comps]
        return out

    @staticmethod
    def _one(engine: Any, prompt: Any, params: Any) -> list[Any]:
        try:
            return engine.generate([prompt], params)[0]
        except ValueError as e:
            log.warning("agentic: the %s engine refused a prompt (%s); the step gets empty responses", type(engine).__name__, e)
            return [Completion("", 0, "length")] * params.n

    def run(self, programs: list[str | None], inputs: list[str], time_limit: float) -> list[list[Ran]]:
        if self.pool is None:
            raise RuntimeError("LivePorts.run outside its with-block: the sandbox pool is not open")
        jobs = [Job(p, [(x, "") for x in inputs], time_limit, key=i, want_output=True, typing_names=self.typing_names)
                for i, p in enumerate(programs) if p is not None]
        self.pool.run(jobs)
        rows: list[list[Ran]] = [[Ran("no_code", None) for _ in inputs] for _ in programs]
        for job in jobs:
            rows[job.key] = [Ran(s, job.outputs[k] if k < len(job.outputs) else None) for k, s in enumerate(job.status)]
        return rows

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))
