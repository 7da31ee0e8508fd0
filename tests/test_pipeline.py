"""The compiled pipelines: structure, resources, caching and retries, loaded back with the KFP SDK."""

from __future__ import annotations

import re

import pytest
import yaml

from cure.cli import main
from cure.config import CureConfig
from cure.kfp_compile import import_pipelines

ROUNDS, EVAL_EVERY, SAVE_EVERY = 3, 2, 2


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    rc = main(["compile", "--out", str(out), "--rounds", str(ROUNDS), "--eval-every", str(EVAL_EVERY), "--save-every", str(SAVE_EVERY)])
    assert rc == 0
    spec = yaml.safe_load((out / "cure-training.yaml").read_text())
    return out, spec


def _tasks_by_display(spec):
    return {t["taskInfo"]["name"]: (name, t) for name, t in spec["root"]["dag"]["tasks"].items()}


def test_yaml_loads_back_with_kfp_sdk(compiled):
    from kfp import components

    out, _ = compiled
    for name in ("cure-training.yaml", "cure-evaluation.yaml"):
        comp = components.load_component_from_file(str(out / name))
        assert comp.pipeline_spec is not None
        assert "train__learning_rate" in comp.component_spec.inputs or name == "cure-evaluation.yaml"
        assert "eval__k_code" in comp.component_spec.inputs


def test_every_stage_present_for_every_round(compiled):
    _, spec = compiled
    names = set(_tasks_by_display(spec))
    for r in range(1, ROUNDS + 1):
        for stage in ("rollout", "execute", "reward", "train"):
            assert f"round {r}: {stage}" in names
    evals = sorted(int(m.group(1)) for n in names if (m := re.match(r"round (\d+): evaluate", n)))
    assert evals == [0, 2, 3]  # start, every EVAL_EVERY, last
    saves = sorted(int(m.group(1)) for n in names if (m := re.match(r"round (\d+): promote", n)))
    assert saves == [2, 3]


def test_rounds_chain_models_and_history(compiled):
    _, spec = compiled
    by_display = _tasks_by_display(spec)
    tasks = spec["root"]["dag"]["tasks"]
    train2 = tasks[by_display["round 2: train"][0]]
    producer = train2["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"]
    assert producer == by_display["round 1: train"][0]
    ev3 = tasks[by_display["round 3: evaluate"][0]]
    assert ev3["inputs"]["artifacts"]["history_in"]["taskOutputArtifact"]["producerTask"] == by_display["round 2: evaluate"][0]


def test_resources_caching_and_retries(compiled):
    _, spec = compiled
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    for display, (_name, task) in _tasks_by_display(spec).items():
        res = executors[spec["components"][task["componentRef"]["name"]]["executorLabel"]]["container"].get("resources", {})
        stage = display.split(": ")[-1] if ": " in display else display
        if stage in ("rollout", "train", "evaluate"):
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "1"
            assert not task.get("cachingOptions", {}).get("enableCache", False), f"{display} must not be cached"
        if stage == "execute":
            assert "accelerator" not in res and res["resourceCpuLimit"] == "2"
        if stage in ("rollout", "execute", "reward", "evaluate"):
            assert task["retryPolicy"]["maxRetryCount"] == 2, display
        if stage == "train":
            assert "retryPolicy" not in task
    assert len(tasks) == 3 + 4 * ROUNDS + 3 + 2


def test_every_config_field_is_a_pipeline_parameter(compiled):
    from pipelines.params import COMPILE_TIME

    _, spec = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    cfg = CureConfig()
    for section in CureConfig.model_fields:
        for field in type(getattr(cfg, section)).model_fields:
            if f"{section}.{field}" in COMPILE_TIME:
                continue
            assert f"{section}__{field}" in params, f"{section}.{field} missing"
    assert params["train__learning_rate"]["defaultValue"] == 1e-6
    assert params["rollout__k_code"]["defaultValue"] == 16
    assert "AdamW learning rate" in params["train__learning_rate"]["description"]


def test_pipeline_config_round_trip():
    from cure.steps import config_from_pipeline
    from pipelines.params import config_dict

    import_pipelines()
    # KFP hands dict members over as strings; the config parses them back.
    as_strings = {"rollout__k_code": "4.0", "train__learning_rate": "0.0003", "eval__scales": "[[2, 2]]",
                  "execute__isolation": "none", "reward__post_stage": "true", "rollout__prompt_dir": ""}
    cfg = config_from_pipeline(config_dict(as_strings))
    assert cfg.rollout.k_code == 4 and cfg.train.learning_rate == 3e-4 and cfg.eval.scales == [(2, 2)]
    assert cfg.reward.post_stage is True and cfg.rollout.prompt_dir is None


def test_every_component_image_is_built_by_a_dockerfile(compiled):
    from pathlib import Path

    from cure.images import FAMILIES, image_for

    _, spec = compiled
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    by_image = {image_for(f): f for f in FAMILIES}
    repo = Path(__file__).resolve().parents[1]
    for image in images:
        assert image in by_image, f"{image} is not one of the project's images {sorted(by_image)}"
        assert (repo / "images" / by_image[image] / "Dockerfile").is_file()
