"""Training engines: DeepSpeed (ZeRO 0-3, production) and plain PyTorch (no DeepSpeed needed).

Both expose the same small surface, so the training loop in :mod:`cure.train.stage` reads the same for either:
``forward`` (logits for a micro batch), ``backward`` (accumulate, with the caller's weighting), ``step``
(at the end of an update: reduce, clip, AdamW; returns the gradient norm before clipping), ``set_lr``,
``full_state_dict`` (gathered weights for saving; collective under ZeRO-3) and optimizer state for resume.

Distributed runs come from ``torchrun`` (or the Training Operator, which sets the same variables). On a CPU
machine the backend is gloo; DeepSpeed then JIT-compiles its CPU communication op with g++ the first time
(about a minute, cached under ``~/.cache/torch_extensions``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cure.config import TrainConfig

log = logging.getLogger(__name__)

NO_DECAY = ("bias", "norm.weight", "layernorm.weight", "layer_norm.weight")


def _model_inputs(dev, input_ids, position_ids, attention_mask, logits_to_keep) -> dict:
    """The causal-LM call's keyword arguments on ``dev`` (both engines feed the model the same way)."""
    return {
        "input_ids": input_ids.to(dev),
        "position_ids": position_ids.to(dev),
        "attention_mask": None if attention_mask is None else attention_mask.to(dev),
        "logits_to_keep": logits_to_keep.to(dev) if isinstance(logits_to_keep, torch.Tensor) else logits_to_keep,
        "use_cache": False,
    }


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(engine: str) -> DistInfo:
    """Join the process group torchrun describes (or a one-process group), and pick this rank's device.

    A single process without torchrun gets loopback defaults so DeepSpeed, which always wants a process group,
    runs the same way as under torchrun.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    needs_group = world > 1 or engine == "deepspeed"
    if needs_group and not dist.is_initialized():
        if "RANK" not in os.environ:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
        backend = "nccl" if cuda else "gloo"
        if engine == "deepspeed":
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return DistInfo(0, 1, local_rank, device)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norm weights (the reference's grouping)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _load_model(model_dir: str | torch.nn.Module, dtype: torch.dtype, gradient_checkpointing: bool) -> torch.nn.Module:
    """The causal LM saved in ``model_dir`` in ``dtype``; a model object instead of a folder is used as it is, cast
    to ``dtype`` (a benchmark's randomly initialised model: nothing to write and read back)."""
    if isinstance(model_dir, torch.nn.Module):
        model = model_dir.to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _cpu_weights(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters (tied ones once, as named_parameters lists them) plus persistent buffers, copied to CPU."""
    out = {k: v.detach().to("cpu", copy=True) for k, v in params.items()}
    persistent = set(model.state_dict())
    for name, buf in model.named_buffers():
        if name in persistent:
            out[name] = buf.detach().to("cpu", copy=True)
    return out


def _all_ranks(ok: bool, dist_info: DistInfo) -> bool:
    if dist_info.world_size == 1:
        return ok
    import torch.distributed as dist

    dev = dist_info.device if dist_info.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([0 if ok else 1], dtype=torch.int32, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) == 0


class Engine:
    """Common parts; subclasses wrap the model and optimizer."""

    model: torch.nn.Module  # the Hugging Face model (unwrapped)
    dist: DistInfo

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                logits_to_keep: torch.Tensor | int = 0) -> torch.Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def backward(self, loss: torch.Tensor, is_last: bool) -> None:
        raise NotImplementedError

    last_step_applied: bool = True  # False when the last :meth:`step` left the weights unchanged

    def step(self) -> float:
        """Clip and apply the accumulated gradients; returns the global gradient norm (before clipping)."""
        raise NotImplementedError

    def weights_finite(self) -> bool:
        """Whether every weight is finite (collective: every rank calls it; same answer on every rank)."""
        ok = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        return _all_ranks(ok, self.dist)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        raise NotImplementedError

    def save_optimizer(self, folder: Path) -> None:
        """Write the optimizer state under ``folder`` (collective: every rank calls it)."""
        raise NotImplementedError

    def load_optimizer(self, folder: Path) -> None:
        """Read the optimizer state :meth:`save_optimizer` wrote (collective)."""
        raise NotImplementedError


class TorchEngine(Engine):
    """Plain PyTorch: the model on this rank's device, AdamW, gradients averaged across ranks by all-reduce.

    On a GPU with ``bf16`` the forward runs under bf16 autocast with float32 weights and optimizer state.
    """

    def __init__(self, model_dir: str | torch.nn.Module, cfg: TrainConfig, dist_info: DistInfo, train: bool = True):
        self.dist = dist_info
        self.cfg = cfg
        self.autocast = cfg.bf16 and dist_info.device.type == "cuda"
        self.model = _load_model(model_dir, torch.float32, cfg.gradient_checkpointing and train).to(dist_info.device)
        self.optimizer = None
        if train:
            self.optimizer = torch.optim.AdamW(
                _param_groups(self.model, cfg.weight_decay), lr=cfg.learning_rate, betas=tuple(cfg.adam_betas)
            )

    def forward(self, input_ids, position_ids, attention_mask, logits_to_keep=0):
        dev = self.dist.device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(**_model_inputs(dev, input_ids, position_ids, attention_mask, logits_to_keep)).logits

    def backward(self, loss, is_last):
        loss.backward()

    def step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.dist.world_size > 1:
            import torch.distributed as dist

            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.dist.world_size)
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        # A NaN/inf norm (the same on every rank: gradients are already averaged) would turn every weight into
        # NaN through the clip factor: such an update is never applied.
        self.last_step_applied = math.isfinite(norm)
        if self.last_step_applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def full_state_dict(self):
        if not self.dist.is_main:
            return None
        return _cpu_weights(self.model, dict(self.model.named_parameters()))

    def save_optimizer(self, folder):
        # Replicated on every rank, so rank 0's copy is the state.
        if self.dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")

    def load_optimizer(self, folder):
        state = torch.load(folder / "optimizer.pt", map_location=self.dist.device, weights_only=True)
        self.optimizer.load_state_dict(state)


def deepspeed_config(cfg: TrainConfig, on_gpu: bool, train: bool = True, grad_accum: int = 1) -> dict[str, Any]:
    """The DeepSpeed config for this TrainConfig (the reference's ``get_train_ds_config`` shape)."""
    stage = cfg.zero_stage if train else (3 if cfg.zero_stage == 3 else 0)
    offload = cfg.offload and train
    zero: dict[str, Any] = {
        "stage": stage,
        "offload_optimizer": {"device": "cpu" if offload else "none", "pin_memory": on_gpu},
        "offload_param": {"device": "cpu" if offload and stage == 3 else "none", "pin_memory": on_gpu},
    }
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": max(1, grad_accum),
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(cfg.bf16 and on_gpu)},
        "zero_allow_untested_optimizer": True,
        "prescale_gradients": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "data_types": {"grad_accum_dtype": "fp32"},
    }


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO 0-3 with optional CPU offload; bf16 only on GPU (CPU runs float32).

    The optimizer is AdamW: DeepSpeed's CPU Adam under offload, FusedAdam on GPU, torch AdamW on CPU. The caller
    marks the last micro batch of an update (``backward(..., is_last=True)``); DeepSpeed reduces gradients across
    ranks there and ``step`` applies clipping and the update. Loss scaling by the accumulation count is off: the
    caller weights each micro batch itself.
    """

    def __init__(self, model_dir: str | torch.nn.Module, cfg: TrainConfig, dist_info: DistInfo, train: bool = True,
                 grad_accum: int = 1):
        import deepspeed

        self.dist = dist_info
        self.cfg = cfg
        on_gpu = dist_info.device.type == "cuda"
        ds_config = deepspeed_config(cfg, on_gpu, train=train, grad_accum=grad_accum)
        dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
        hf_ds = None
        if (ds_config["zero_optimization"]["stage"] == 3 and isinstance(model_dir, str)
                and importlib.util.find_spec("accelerate") is not None):
            # Makes from_pretrained build the model partitioned (zero.Init) instead of whole on every rank;
            # transformers needs accelerate for that. Without it the whole model is loaded on each rank and
            # deepspeed.initialize partitions it (fine for small models, costly in host memory for large ones).
            from transformers.integrations import HfDeepSpeedConfig

            hf_ds = HfDeepSpeedConfig(ds_config)
        model = _load_model(model_dir, dtype, cfg.gradient_checkpointing and train)
        optimizer = None
        if train:
            groups = _param_groups(model, cfg.weight_decay)
            kwargs = {"lr": cfg.learning_rate, "betas": tuple(cfg.adam_betas)}
            if cfg.offload:
                from deepspeed.ops.adam import DeepSpeedCPUAdam

                optimizer = DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
            elif on_gpu:
                from deepspeed.ops.adam import FusedAdam

                optimizer = FusedAdam(groups, adam_w_mode=True, **kwargs)
            else:
                optimizer = torch.optim.AdamW(groups, **kwargs)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config
        )
        self._hf_ds = hf_ds
        self.model = self.engine.module
        self.stage = ds_config["zero_optimization"]["stage"]

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    def forward(self, input_ids, position_ids, attention_mask, logits_to_keep=0):
        dev = self.dist.device
        return self.engine(**_model_inputs(dev, input_ids, position_ids, attention_mask, logits_to_keep)).logits

    def backward(self, loss, is_last):
        self.engine.set_gradient_accumulation_boundary(is_last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        if self.stage == 0:
            # Without ZeRO, DeepSpeed reports no norm and does not skip an overflowing update: check here, where
            # the (already averaged) gradients are whole on every rank, before anything is applied.
            norms = [torch.linalg.vector_norm(p.grad.float()) for p in self.model.parameters() if p.grad is not None]
            norm0 = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
            if not math.isfinite(norm0):
                self.optimizer.zero_grad(set_to_none=True)
                self.last_step_applied = False
                return norm0
            self.engine.step()
            self.last_step_applied = True
            return norm0
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        # DeepSpeed's ZeRO optimizers skip an update whose gradients overflow and say so here.
        self.last_step_applied = getattr(self.engine, "_step_applied", True) is not False
        return float(norm) if norm is not None else float("nan")

    def weights_finite(self) -> bool:
        import deepspeed

        ok = True
        for param in self.model.parameters():
            with deepspeed.zero.GatheredParameters([param], enabled=self.stage == 3):
                ok = ok and bool(torch.isfinite(param).all())
        return _all_ranks(ok, self.dist)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def full_state_dict(self):
        """All weights on rank 0 (None elsewhere). Under ZeRO-3 every rank must call this: it gathers."""
        import deepspeed

        out: dict[str, torch.Tensor] = {}
        for name, param in self.model.named_parameters():
            with deepspeed.zero.GatheredParameters([param], enabled=self.stage == 3):
                if self.dist.is_main:
                    out[name] = param.detach().to("cpu", copy=True)
        if not self.dist.is_main:
            return None
        return _cpu_weights(self.model, out)

    def save_optimizer(self, folder):
        # Partitioned across ranks under ZeRO: each rank writes its shard (a shared filesystem across nodes).
        self.engine.save_checkpoint(str(folder), tag="deepspeed", save_latest=False)

    def load_optimizer(self, folder):
        path, _ = self.engine.load_checkpoint(
            str(folder), tag="deepspeed", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed optimizer state under {folder}/deepspeed")


def build_engine(model_dir: str | torch.nn.Module, cfg: TrainConfig, dist_info: DistInfo, *, train: bool = True,
                 grad_accum: int = 1) -> Engine:
    """The engine ``cfg.engine`` names (``model_dir``: a saved model's folder, or a model object); a clear error if
    DeepSpeed is asked for but not installed."""
    if cfg.engine == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise RuntimeError(
                "train.engine=deepspeed but DeepSpeed is not installed: pip install 'cure[deepspeed]' "
                "(needs g++ and ninja), or run with --engine torch"
            ) from e
        return DeepSpeedEngine(model_dir, cfg, dist_info, train=train, grad_accum=grad_accum)
    return TorchEngine(model_dir, cfg, dist_info, train=train)
