"""GPU check: the rollout pod's and the train pod's code paths on one CUDA GPU, against a CPU reference.

Two parts, on two machines (the tiny model is built on the CPU machine: ``cure model tiny --out DIR``; the
40-step variant the tests cache in ``~/.cache/cure/tiny-seed0-steps40`` is enough here):

    # 1. on a CPU machine: greedy rollouts in float32, reward records (rollout -> gVisor execute -> reward),
    #    and a float32 train step with the torch engine
    python bench/gpu_check.py reference --model MODEL --out REF
    # 2. on the GPU machine, with MODEL and REF copied there (needs deepspeed and nvcc for FusedAdam's JIT build)
    TORCH_CUDA_ARCH_LIST=9.0 python bench/gpu_check.py gpu --model MODEL --ref REF --out OUT

``TORCH_CUDA_ARCH_LIST`` must be a plain list (``9.0`` on an H100/H200) when DeepSpeed JIT-builds FusedAdam:
DeepSpeed 0.19.8's builder cannot parse an arch-specific entry such as ``9.0a`` (``ValueError: invalid literal
for int() with base 10: '0a'``). The train image prebuilds the op and does not JIT-build it.

``gpu`` runs, each training case in its own process as a train pod would:

* rollout: :func:`cure.stages.rollout` with ``rollout.engine=hf``, greedy, ``rollout.dtype`` bfloat16 and float32;
  every response is compared with the CPU's; then a sampled run (16 programs and 16 tests per task) for tokens/s;
* train: :func:`cure.stages.train` (-> :func:`cure.train.launch.run_train` -> ``train_step``) on the training records
  with DeepSpeed ZeRO-3 in bf16 (the default), the torch engine in bf16 autocast, and both in float32; then the
  launcher's own ``torchrun`` command (:func:`cure.train.launch.torchrun_command`) with one rank, NCCL, ZeRO-3 bf16.
  Per case: loss, policy loss, KL, ratio, gradient norm, whether every weight is finite, the weight change, and the
  agreement of the updates between cases (``rel_update_diff``: ||w_a - w_b|| / ||w_a - w_0||).

Results go to ``OUT/gpu_check.json`` (and the log to stdout). Not a test: it asserts nothing; a failing case is
recorded with its error and the other cases still run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

N_TASKS = 16
MAX_NEW = 160
TRAIN_SETTINGS = [
    "train.zero_stage=3",
    "train.learning_rate=5e-4",
    "train.policy_update_steps=2",
    "train.prompt_max_len=384",
    f"train.generate_max_len={MAX_NEW}",
    "train.packing_max_len=1024",
    "train.micro_batch_tokens=1024",
]
# (name, engine, bf16, through torchrun)
TRAIN_CASES = [
    ("deepspeed_zero3_bf16", "deepspeed", True, False),
    ("torch_bf16", "torch", True, False),
    ("deepspeed_zero3_fp32", "deepspeed", False, False),
    ("torch_fp32", "torch", False, False),
    ("torchrun_1rank_deepspeed_zero3_bf16", "deepspeed", True, True),
]
PAIRS = [
    ("deepspeed_zero3_bf16", "torch_bf16"),
    ("deepspeed_zero3_fp32", "torch_fp32"),
    ("deepspeed_zero3_fp32", "cpu_torch_fp32"),
    ("torch_fp32", "cpu_torch_fp32"),
    ("deepspeed_zero3_bf16", "deepspeed_zero3_fp32"),
    ("torch_bf16", "torch_fp32"),
    ("torchrun_1rank_deepspeed_zero3_bf16", "deepspeed_zero3_bf16"),
]


def _config(overrides: list[str]):
    from cure.config import load_config

    return load_config(None, overrides)


def rollout_config(greedy: bool, dtype: str = "bfloat16", k: int = 1, batch_size: int = 64):
    return _config([
        "rollout.engine=hf", f"rollout.dtype={dtype}", f"rollout.temperature={0 if greedy else 1.0}",
        f"rollout.k_code={k}", f"rollout.k_test={k}", f"rollout.max_new_tokens={MAX_NEW}",
        f"rollout.batch_size={batch_size}", f"data.tasks_per_step={N_TASKS}",
    ])


def run_rollout(model: str, tasks: Path, out: Path, **kw: Any) -> dict[str, Any]:
    """One rollout stage through :func:`cure.stages.rollout`; adds the response tokens and tokens/s."""
    from cure.stages import rollout
    from cure.tasks import read_jsonl

    stats = rollout(model, str(tasks), rollout_config(**kw), 0, str(out))
    records = read_jsonl(out)
    tokens = sum(sum(r["code_lengths"]) + sum(r["test_lengths"]) for r in records)
    seqs = sum(len(r["code_responses"]) + len(r["test_responses"]) for r in records)
    return {"seconds": round(stats["seconds"], 3), "sequences": seqs, "tokens": tokens,
            "tokens_per_s": round(tokens / stats["seconds"], 1)}


def make_random_model(model: str, out: Path, seed: int = 0) -> Path:
    """The model's architecture and tokenizer with seeded N(0, 0.2) weights: it rarely ends a row early, so every
    greedy row runs to the token limit (a long comparison); the wide init keeps near-ties between tokens rare."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    net = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model), dtype=torch.float32)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    if (Path(model) / "prompts").is_dir():
        shutil.copytree(Path(model) / "prompts", out / "prompts", dirs_exist_ok=True)
    return out


def write_train_records(rollouts: Path, out: Path, seed: int = 0) -> int:
    """Reward records ``{prompt, response, reward, role, task_id, truncated}`` from rollouts, with seeded random
    rewards z-normalised per task and role; returns how many were written."""
    import random
    import statistics

    from cure.tasks import read_jsonl, write_jsonl

    rng = random.Random(seed)
    records = []
    for r in read_jsonl(rollouts):
        for role, key in (("coder", "code"), ("tester", "test")):
            raw = [rng.random() for _ in r[f"{key}_responses"]]
            mu, sd = statistics.fmean(raw), statistics.pstdev(raw) or 1.0
            for resp, x, trunc in zip(r[f"{key}_responses"], raw, r[f"{key}_truncated"], strict=True):
                records.append({"prompt": r[f"{key}_prompt"], "response": resp, "reward": (x - mu) / sd, "role": role,
                                "task_id": r["task_id"], "truncated": trunc})
    write_jsonl(out, records)
    return len(records)


def responses(path: Path) -> list[str]:
    from cure.tasks import read_jsonl

    return [text for r in read_jsonl(path) for text in r["code_responses"] + r["test_responses"]]


def compare_responses(got: list[str], want: list[str]) -> dict[str, Any]:
    equal = sum(a == b for a, b in zip(got, want, strict=True))
    firsts = []
    for a, b in zip(got, want, strict=True):
        if a != b:
            firsts.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))))
    return {"equal": equal, "total": len(want), "first_diff_chars": firsts[:10]}


def load_weights(folder: str | Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    return {k: v.to(torch.float32) for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}


def weight_stats(w: dict[str, Any], w0: dict[str, Any]) -> dict[str, Any]:
    import torch

    finite = all(bool(torch.isfinite(v).all()) for v in w.values())
    delta = torch.cat([(w[k] - w0[k]).flatten() for k in w0])
    return {"weights_finite": finite, "update_max_abs": float(delta.abs().max()), "update_norm": float(delta.norm())}


def agreement(a: dict[str, Any], b: dict[str, Any], w0: dict[str, Any]) -> dict[str, float]:
    import torch

    keys = sorted(w0)
    da = torch.cat([(a[k] - w0[k]).flatten() for k in keys])
    db = torch.cat([(b[k] - w0[k]).flatten() for k in keys])
    diff = da - db
    return {"max_abs_weight_diff": float(diff.abs().max()),
            "rel_update_diff": float(diff.norm() / da.norm().clamp_min(1e-30)),
            "update_cosine": float(torch.nn.functional.cosine_similarity(da, db, dim=0))}


# ------------------------------------------------------------------------------------------------ one train case


def train_case(args: argparse.Namespace) -> int:
    """One training step in this process (``cure.stages.train``) or through the launcher's torchrun command."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    result: dict[str, Any] = {"case": args.case}
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    try:
        cfg = _config(TRAIN_SETTINGS + [f"train.engine={args.engine}", f"train.bf16={str(args.bf16).lower()}"])
        if args.torchrun:
            from cure.config import dump_config
            from cure.train.launch import clean_env, read_metrics, torchrun_command

            (out / "config.yaml").write_text(dump_config(cfg))
            ckpt_root = out / "ckpt"
            cmd = torchrun_command(args.model, args.rewards, str(ckpt_root), str(out / "config.yaml"), 1)
            result["command"] = " ".join(cmd)
            rc = subprocess.run(cmd, env=clean_env(), check=False).returncode
            if rc:
                raise RuntimeError(f"torchrun exited {rc}")
            metrics = read_metrics(ckpt_root)
            model_out = metrics["checkpoint"]
        else:
            from cure.stages import train

            model_out = str(out / "model")
            metrics = train(args.model, args.rewards, cfg, model_out, None, 1)
        result["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        result["model_out"] = str(model_out)
        try:
            import torch

            if torch.cuda.is_available():
                result["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        except Exception:  # noqa: BLE001 - informative only
            pass
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - recorded, the other cases still run
        result.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
    result["wall_s"] = round(time.time() - t0, 2)
    (out / "case.json").write_text(json.dumps(result, indent=2))
    return 0


def spawn_case(name: str, engine: str, bf16: bool, torchrun: bool, model: str, rewards: str, work: Path,
               timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "train-case", "--case", name, "--engine", engine, "--bf16", str(bf16),
           "--model", model, "--rewards", rewards, "--out", str(work / name)]
    if torchrun:
        cmd.append("--torchrun")
    print(f"=== train case {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, timeout=timeout_s, check=False)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return {"case": name, "ok": False, "error": f"timed out after {timeout_s:.0f} s"}
    path = work / name / "case.json"
    if not path.is_file():
        return {"case": name, "ok": False, "error": f"exit {rc}, wrote no case.json", "wall_s": time.time() - t0}
    result = json.loads(path.read_text())
    result["process_wall_s"] = round(time.time() - t0, 2)
    print(f"=== {name}: " + json.dumps({k: result.get(k) for k in ("ok", "error", "wall_s")}), flush=True)
    return result


def summarize_train(cases: dict[str, dict[str, Any]], model: str) -> dict[str, Any]:
    w0 = load_weights(model)
    weights = {}
    for name, res in cases.items():
        if res.get("ok"):
            w = load_weights(res["model_out"])
            weights[name] = w
            res.update(weight_stats(w, w0))
    pairs = {}
    for a, b in PAIRS:
        if a in weights and b in weights:
            ma, mb = cases[a]["metrics"], cases[b]["metrics"]
            pairs[f"{a} vs {b}"] = {
                **agreement(weights[a], weights[b], w0),
                **{f"{k}_diff": abs(ma[k] - mb[k]) for k in ("loss", "pg_loss", "kl", "grad_norm", "ratio")},
            }
    return pairs


KEEP = ("loss", "pg_loss", "kl", "ratio", "entropy", "grad_norm", "clip_frac", "tokens", "updates", "train_time",
        "tokens_per_s", "engine", "zero_stage", "world_size")


def brief(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: res[k] for k in ("ok", "error", "wall_s", "weights_finite", "update_max_abs", "update_norm",
                                "max_memory_allocated_mib") if k in res}
    out.update({k: res["metrics"][k] for k in KEEP if k in res.get("metrics", {})})
    return out


# ------------------------------------------------------------------------------------------------ the two parts


def make_reference(args: argparse.Namespace) -> int:
    """CPU: tasks, greedy rollouts (float32), training records from a sampled rollout, a float32 train step."""
    from cure.synthetic import generate_tasks
    from cure.tasks import write_jsonl

    ref = Path(args.out)
    ref.mkdir(parents=True, exist_ok=True)
    tasks = ref / "tasks.jsonl"
    write_jsonl(tasks, generate_tasks(N_TASKS, seed=5, split="heldout"))
    info: dict[str, Any] = {"machine": platform.node(), "load": os.getloadavg(), "model": args.model}
    info["greedy"] = run_rollout(args.model, tasks, ref / "greedy.jsonl", greedy=True, dtype="float32")
    print("greedy reference:", info["greedy"], flush=True)
    random_model = make_random_model(args.model, ref / "random_model")
    info["greedy_random"] = run_rollout(str(random_model), tasks, ref / "greedy_random.jsonl", greedy=True,
                                        dtype="float32")
    print("greedy reference, random weights:", info["greedy_random"], flush=True)
    # training records: the model's own sampled responses with seeded random rewards, z-normalised per task and
    # role (the reward stage's advantages). The 40-step model's programs all fail, so real rewards would all be
    # equal and the train step would have nothing to train on.
    run_rollout(args.model, tasks, ref / "rollouts_k4.jsonl", greedy=False, k=4)
    info["train_records"] = write_train_records(ref / "rollouts_k4.jsonl", ref / "rewards.jsonl")
    work = Path(args.work or ref / "work")
    res = spawn_case("cpu_torch_fp32", "torch", False, False, args.model, str(ref / "rewards.jsonl"), work, 1800)
    if res.get("ok"):
        shutil.copytree(res["model_out"], ref / "cpu_torch_fp32", dirs_exist_ok=True)
        res["model_out"] = "cpu_torch_fp32"
    info["cpu_torch_fp32"] = res
    (ref / "reference.json").write_text(json.dumps(info, indent=2, default=str))
    print(json.dumps(brief(res), indent=2), flush=True)
    return 0


def gpu(args: argparse.Namespace) -> int:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = Path(args.ref)
    work = Path(args.work or "/tmp/cure-gpu-check")
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                              "python": platform.python_version(), "torch": torch.__version__,
                              "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for mod in ("transformers", "deepspeed", "accelerate", "pydantic"):
        try:
            report[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            report[mod] = f"not importable: {e}"
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    smi = shutil.which("nvidia-smi")
    if smi:
        report["nvidia_smi"] = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                                               "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    report["nvcc"] = shutil.which("nvcc") or os.environ.get("CUDA_HOME", "not found")
    print(json.dumps(report, indent=2), flush=True)

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    save()
    only = {x for x in args.only.split(",") if x}

    def wanted(key: str) -> bool:
        return not only or key in only

    tasks = ref / "tasks.jsonl"
    report["rollout"] = {}
    for (which, model, ref_file), dtype in itertools.product(
        (("tiny", args.model, "greedy.jsonl"), ("random", str(ref / "random_model"), "greedy_random.jsonl")),
        ("bfloat16", "float32"),
    ):
        key = f"greedy_{which}_{dtype}"
        if not wanted(key):
            continue
        try:
            stats = run_rollout(model, tasks, work / f"{key}.jsonl", greedy=True, dtype=dtype)
            stats.update(compare_responses(responses(work / f"{key}.jsonl"), responses(ref / ref_file)))
            report["rollout"][key] = stats
        except Exception as e:  # noqa: BLE001
            report["rollout"][key] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        print(key, json.dumps(report["rollout"][key]), flush=True)
        save()
    for key, kw in (("sampled_k16_bf16_batch64", {"batch_size": 64}), ("sampled_k16_bf16_batch512", {"batch_size": 512})):
        if not wanted(key):
            continue
        try:
            run_rollout(args.model, tasks, work / "warm.jsonl", greedy=False, k=1, **kw)  # CUDA warm-up
            report["rollout"][key] = run_rollout(args.model, tasks, work / f"{key}.jsonl", greedy=False, k=16, **kw)
        except Exception as e:  # noqa: BLE001
            report["rollout"][key] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        print(key, json.dumps(report["rollout"][key]), flush=True)
        save()

    cases: dict[str, dict[str, Any]] = {}
    rewards = str(ref / "rewards.jsonl")
    for name, engine, bf16, torchrun in TRAIN_CASES:
        if not wanted(name):
            continue
        cases[name] = spawn_case(name, engine, bf16, torchrun, args.model, rewards, work, args.case_timeout)
        report["train"] = {n: brief(r) for n, r in cases.items()}
        save()
    cpu = json.loads((ref / "reference.json").read_text()).get("cpu_torch_fp32", {})
    if cpu.get("ok"):
        cpu["model_out"] = str(ref / "cpu_torch_fp32")
        cases["cpu_torch_fp32"] = cpu
    try:
        report["agreement"] = summarize_train(cases, args.model)
    except Exception as e:  # noqa: BLE001
        report["agreement"] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    report["train"] = {n: brief(r) for n, r in cases.items()}
    report["train_errors"] = {n: r.get("traceback", r.get("error")) for n, r in cases.items() if not r.get("ok")}
    save()
    print(json.dumps({k: report[k] for k in ("rollout", "train", "agreement")}, indent=2), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference", help="CPU: greedy outputs, reward records and a float32 train step")
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--work", default=None)
    g = sub.add_parser("gpu", help="the GPU check against a reference folder")
    g.add_argument("--model", required=True)
    g.add_argument("--ref", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--work", default=None)
    g.add_argument("--case-timeout", type=float, default=240.0)
    g.add_argument("--only", default="", help="comma-separated rollout keys / train case names to run (default: all)")
    c = sub.add_parser("train-case", help="(internal) one training step, results in OUT/case.json")
    c.add_argument("--case", required=True)
    c.add_argument("--engine", choices=("deepspeed", "torch"), required=True)
    c.add_argument("--bf16", type=lambda s: s.lower() in ("1", "true", "yes"), required=True)
    c.add_argument("--torchrun", action="store_true")
    c.add_argument("--model", required=True)
    c.add_argument("--rewards", required=True)
    c.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return {"reference": make_reference, "gpu": gpu, "train-case": train_case}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
