"""The CURE training pipeline and the evaluation-only pipeline (KFP v2).

Rounds are unrolled at compile time (KFP v2 has no while loop): round r is rollout -> execute -> reward -> train on
the model of round r-1. The starting model is evaluated at round 0 (with several seeds, to measure evaluation
noise), then every ``eval_every`` rounds and after the last; checkpoints are promoted to the store every
``save_every`` rounds and after the last. Every hyperparameter of :class:`cure.config.CureConfig` is a pipeline
parameter (``section__field``) with the paper's default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl, kubernetes

from components import (
    evaluate,
    evaluate_pairing,
    execute,
    init_model,
    prepare_benchmarks,
    prepare_data,
    promote_checkpoint,
    reward,
    rollout,
    train,
)
from cure.config import CureConfig
from cure.data import PAPER_BENCHMARKS, TRAIN_DATA
from pipelines.params import config_dict, with_config_signature

DEFAULT_ACCELERATOR = "nvidia.com/gpu"


def _gpu(task: Any, accelerator: str, gpus: int, cpu: str, memory: str) -> Any:
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    if gpus > 0:
        task.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
    return task


def _retry(task: Any, n: int = 2) -> Any:
    return task.set_retry(num_retries=n, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")


def run_fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Pipeline inputs that are not config fields."""
    return {k: v for k, v in kw.items() if "__" not in k}


def build_training_pipeline(
    rounds: int | None = None,
    eval_every: int | None = None,
    save_every: int | None = None,
    *,
    gpus: int = 1,
    accelerator: str = DEFAULT_ACCELERATOR,
    base_model: str = "Qwen/Qwen2.5-7B-Instruct",
    train_data: str = TRAIN_DATA,
    eval_benchmarks: tuple[str, ...] = PAPER_BENCHMARKS,
    cfg: CureConfig | None = None,
    name: str = "cure-training",
) -> Callable[..., Any]:
    """Build the training pipeline. ``rounds``/``eval_every``/``save_every`` default to the config's pipeline section."""
    cfg = cfg or CureConfig()
    rounds = cfg.pipeline.rounds if rounds is None else rounds
    eval_every = cfg.pipeline.eval_every if eval_every is None else eval_every
    save_every = cfg.pipeline.save_every if save_every is None else save_every
    if rounds < 0 or eval_every < 1 or save_every < 1:
        raise ValueError("rounds must be >= 0 and eval_every, save_every >= 1")

    def pipeline_body(**kw: Any) -> None:
        config = config_dict(kw)
        run = run_fields(kw)
        store, experiment = kw["pipeline__store_uri"], kw["pipeline__experiment"]
        data = _retry(prepare_data(spec=run["train_data"])).set_display_name("prepare training tasks")
        benches = _retry(prepare_benchmarks(specs=run["eval_benchmarks"])).set_display_name("prepare benchmarks")
        init = _retry(init_model(base_model=run["base_model"], store_uri=store, experiment=experiment, resume=run["resume"]))
        init.set_display_name("starting model").set_caching_options(False)
        initial = init.outputs["model"]

        def evaluate_round(r: int, model: Any, history: Any, seeds: Any) -> Any:
            ev = evaluate(
                config=config, round=r, seeds=seeds, model=model, benchmarks=benches.outputs["benchmarks"],
                store_uri=store, experiment=experiment, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                **({"history_in": history} if history is not None else {}),
            )
            _gpu(ev, accelerator, gpus, "8", "64G").set_caching_options(False).set_display_name(f"round {r}: evaluate")
            return _retry(ev).outputs["history"]

        history = evaluate_round(0, initial, None, run["noise_seeds"])
        model = initial
        for r in range(1, rounds + 1):
            ro = rollout(config=config, round=r, model=model, tasks=data.outputs["tasks"])
            _retry(_gpu(ro, accelerator, gpus, "8", "64G").set_caching_options(False)).set_display_name(f"round {r}: rollout")
            ex = execute(config=config, round=r, rollouts=ro.outputs["rollouts"])
            _retry(ex.set_cpu_limit("2").set_memory_limit("4G")).set_display_name(f"round {r}: execute")
            rw = reward(config=config, round=r, rollouts=ro.outputs["rollouts"], executions=ex.outputs["executions"])
            _retry(rw.set_cpu_limit("1").set_memory_limit("2G")).set_display_name(f"round {r}: reward")
            tr = train(config=config, round=r, model=model, reference=initial, rewards=rw.outputs["rewards"])
            # No retry on train: a failed optimisation step (OOM, bad config) fails the same way again.
            _gpu(tr, accelerator, gpus, "16", "128G").set_caching_options(False).set_display_name(f"round {r}: train")
            model = tr.outputs["new_model"]
            if r % eval_every == 0 or r == rounds:
                history = evaluate_round(r, model, history, [run["eval_seed"]])
            if r % save_every == 0 or r == rounds:
                pr = promote_checkpoint(model=model, store_uri=store, experiment=experiment, name=f"round-{r:04d}")
                _retry(pr).set_display_name(f"round {r}: promote checkpoint")

    fixed = [
        ("base_model", str, base_model, "Starting model: a hub name, a folder, or tiny[:SEED] (the offline tiny model)."),
        ("train_data", str, train_data, "Training tasks: synthetic:SPLIT:N[:SEED], humaneval[:N], file:PATH, hf:NAME[:SPLIT] or a released CURE dataset NAME[:N]."),
        ("eval_benchmarks", list, list(eval_benchmarks), "Evaluation benchmarks, NAME=SPEC each; the first is the primary one."),
        ("resume", bool, True, "Continue from the experiment's latest checkpoint in the store when there is one (recurring runs)."),
        ("eval_seed", int, 0, "Sampling seed of the evaluations after round 0."),
        ("noise_seeds", list, [0, 1], "Seeds of the round-0 evaluation; their spread is the evaluation noise in the report."),
    ]
    doc = f"CURE training: {rounds} rounds of rollout -> execute -> reward -> train; evaluate every {eval_every}, save every {save_every}."
    body = with_config_signature(pipeline_body, fixed, cfg, doc)
    return dsl.pipeline(name=name, description=doc)(body)


def build_eval_pipeline(
    *,
    gpus: int = 1,
    accelerator: str = DEFAULT_ACCELERATOR,
    base_model: str = "Qwen/Qwen2.5-7B-Instruct",
    eval_benchmarks: tuple[str, ...] = PAPER_BENCHMARKS,
    cfg: CureConfig | None = None,
    name: str = "cure-evaluation",
    api_key_secret: str = "cure-api-key",
) -> Callable[..., Any]:
    """Evaluate one model (or an experiment's latest checkpoint) on the given benchmarks; with ``coder_model`` set,
    evaluate it as the tester paired with that coder (:mod:`cure.pairing`). An API coder's key comes from the
    Secret ``api_key_secret`` (key ``api_key``) as the environment variable ``rollout.api_key_env``."""
    cfg = cfg or CureConfig()

    def pipeline_body(**kw: Any) -> None:
        config = config_dict(kw)
        run = run_fields(kw)
        store, experiment = kw["pipeline__store_uri"], kw["pipeline__experiment"]
        benches = _retry(prepare_benchmarks(specs=run["eval_benchmarks"]))
        init = _retry(init_model(base_model=run["base_model"], store_uri=store, experiment=experiment, resume=run["use_latest"]))
        init.set_caching_options(False)
        with dsl.If(run["coder_model"] == "", name="self-evaluation"):
            ev = evaluate(
                config=config, round=0, seeds=run["seeds"], model=init.outputs["model"], benchmarks=benches.outputs["benchmarks"],
                store_uri=store, experiment=experiment, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
            _retry(_gpu(ev, accelerator, gpus, "8", "64G").set_caching_options(False))
        with dsl.Else(name="pairing"):
            # Pairing: another coder (an API model: key from the Secret) writes the programs; the model the tests.
            pa = evaluate_pairing(config=config, seeds=run["seeds"], model=init.outputs["model"],
                                  benchmarks=benches.outputs["benchmarks"], coder_model=run["coder_model"],
                                  coder_engine=run["coder_engine"])
            _retry(_gpu(pa, accelerator, gpus, "8", "64G").set_caching_options(False)).set_display_name("pairing")
            kubernetes.use_secret_as_env(pa, secret_name=api_key_secret, secret_key_to_env={"api_key": cfg.rollout.api_key_env},
                                         optional=True)

    fixed = [
        ("base_model", str, base_model, "Model to evaluate: a hub name, a folder, or tiny[:SEED]."),
        ("eval_benchmarks", list, list(eval_benchmarks), "Benchmarks, NAME=SPEC each."),
        ("use_latest", bool, False, "Evaluate the experiment's latest checkpoint instead of base_model when one exists."),
        ("seeds", list, [0], "Sampling seeds; more than one measures evaluation noise."),
        ("coder_model", str, "", "Pairing: the coder that writes the programs (API model name, folder or hub name); "
         "empty = evaluate the model alone."),
        ("coder_engine", str, "openai", "Pairing: the coder's engine, hf, vllm or openai (base URL: rollout.api_base_url)."),
    ]
    doc = "CURE evaluation: one-shot code accuracy, unit-test accuracy, p01/p00 and Best-of-N."
    return dsl.pipeline(name=name, description=doc)(with_config_signature(pipeline_body, fixed, cfg, doc))
