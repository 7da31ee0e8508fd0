"""Rollout: sample programs and unit tests per task with one of three engines (hf, vllm, openai).

``cure.rollout.engine`` holds the interface (:class:`SamplingParams`, :class:`Completion`, :class:`Engine`),
``cure.rollout.registry`` picks an engine by name (:func:`make_engine`); ``cure.rollout.stage`` the stage
(:func:`rollout_tasks`, ``cure rollout``). Engines are imported lazily, so importing this package does not import
torch or vllm.
"""

from cure.rollout.engine import Completion, Engine, SamplingParams
from cure.rollout.registry import make_engine

__all__ = ["Completion", "Engine", "SamplingParams", "make_engine"]
