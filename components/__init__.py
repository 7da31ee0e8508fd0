"""KFP components, one per stage: thin wrappers that call :mod:`cure.steps` (imports inside the body).

Images come from :func:`cure.images.image_for` (one registry/tag for all, ``CURE_IMAGE_REGISTRY`` /
``CURE_IMAGE_TAG``). Every component takes the run's config as the nested dict ``config`` built by the pipeline.
"""

from components.data import prepare_benchmarks, prepare_data
from components.evaluate import evaluate
from components.execute import execute
from components.model import init_model, promote_checkpoint
from components.pairing import evaluate_pairing
from components.reward import reward
from components.rollout import rollout
from components.train import train

ALL = [prepare_data, prepare_benchmarks, init_model, promote_checkpoint, rollout, execute, reward, train, evaluate, evaluate_pairing]
# The image family each component runs in (checked against images/ by the tests).
IMAGE_FAMILY = {
    "prepare-data": "cpu",
    "prepare-benchmarks": "cpu",
    "init-model": "cpu",
    "promote-checkpoint": "cpu",
    "rollout": "rollout",
    "execute": "cpu",
    "reward": "cpu",
    "train": "train",
    "evaluate": "rollout",
    "evaluate-pairing": "rollout",
}
