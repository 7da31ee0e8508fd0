"""KFP components, one per stage: thin wrappers that call :mod:`cure.segment` / :mod:`cure.stages` (imports inside
the body).

Images come from :func:`cure.images.image_for` (one registry/tag for all, ``CURE_IMAGE_REGISTRY`` /
``CURE_IMAGE_TAG``). The training pipeline's first task (``plan_run``) turns the named parameters into one config
(JSON text) that every other task takes, with the run's plan; the evaluation pipeline's first task
(``assemble_config``) does the same for its tasks.
"""

from .cleanup import cleanup_run
from .data import prepare_benchmarks, prepare_data
from .evaluate import evaluate, evaluate_round
from .execute import execute
from .model import init_model, promote
from .pairing import evaluate_pairing
from .plan import assemble_config, finish_run, has_rounds, init_models, is_eval_round, plan_run
from .reward import reward
from .rollout import rollout
from .train import train

ALL = [prepare_data, prepare_benchmarks, plan_run, has_rounds, init_models, init_model, promote, rollout, execute, reward,
       train,
       evaluate, evaluate_round, finish_run, evaluate_pairing, is_eval_round, cleanup_run, assemble_config]
# The image family each component runs in (checked against images/ by the tests).
IMAGE_FAMILY = {
    "prepare-data": "cpu",
    "prepare-benchmarks": "cpu",
    "plan-run": "cpu",
    "assemble-config": "cpu",
    "has-rounds": "cpu",
    "init-models": "cpu",
    "init-model": "cpu",
    "promote": "cpu",
    "rollout": "rollout",
    "execute": "cpu",
    "reward": "cpu",
    "train": "train",
    "evaluate": "rollout",
    "evaluate-pairing": "rollout",
    "evaluate-round": "rollout",
    "finish-run": "cpu",
    "is-eval-round": "cpu",
    "cleanup-run": "cpu",
}
