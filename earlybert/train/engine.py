"""DeepSpeed engines: config resolution, parameter groups, and carrying AdamW state across a shrink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.ticket.coefficients import is_coefficient_name
from earlybert.ticket.shrink import PrunePlan, transfer_adam_state
from earlybert.train.distributed import DistInfo
from earlybert.train.trainer_config import TrainConfig


def deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON with its `auto` values (batch, accumulation, clipping) filled from `train`."""
    path = Path(train.deepspeed_config)
    if not path.is_file() and path.parts[:1] == ("configs",):  # outside the repository: the packaged copy
        from importlib.resources import files

        packaged = Path(str(files("earlybert"))) / path
        path = packaged if packaged.is_file() else path
    if not path.is_file():
        raise EarlyBertError(f"DeepSpeed config {path} does not exist: set train.deepspeed_config to a JSON file")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EarlyBertError(f"DeepSpeed config {path} is not valid JSON ({e}): fix its syntax") from None
    ours = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch_size * train.grad_accum * world_size,
        "gradient_clipping": train.max_grad_norm,
    }
    for key, value in ours.items():
        given = config.get(key, "auto")
        if given != "auto" and given != value:
            raise EarlyBertError(
                f"{path} sets {key}={given} but the run config implies {value}: set it to \"auto\" in the JSON"
            )
        config[key] = value
    config.setdefault("steps_per_print", 10**9)  # we log ourselves
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage == 3:
        raise EarlyBertError(f"{path} uses ZeRO stage 3, which ticket search does not support yet: use stage 0-2")
    return config


def parameter_groups(model: nn.Module, weight_decay: float, coefficient_lr: float = 0.0) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices; none on biases, LayerNorm and slimming coefficients.

    With `coefficient_lr` > 0 the coefficients get a group of their own (marked `coefficients`) at that rate.
    """
    decay, no_decay, coefs = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_coefficient_name(name) and coefficient_lr > 0:
            coefs.append(p)
            continue
        skip = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or is_coefficient_name(name)
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if coefs:
        groups.append({"params": coefs, "weight_decay": 0.0, "lr": coefficient_lr, "coefficients": True})
    return groups


def build_engine(objective: nn.Module, train: TrainConfig, dist: DistInfo, coefficient_lr: float = 0.0):
    """A DeepSpeed engine around `objective`, with a torch AdamW unless the JSON names an optimizer."""
    import deepspeed

    config = deepspeed_config(train, dist.world_size)
    groups = parameter_groups(objective, train.weight_decay, coefficient_lr)
    if "optimizer" in config:
        engine, *_ = deepspeed.initialize(model=objective, model_parameters=groups, config=config)
    else:
        # A client optimizer avoids JIT-building fused ops on CPU and keeps per-parameter state we can slice.
        optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), eps=train.eps)
        engine, *_ = deepspeed.initialize(model=objective, optimizer=optimizer, config=config)
    if dist.world_size == 1 and config.get("zero_optimization", {}).get("stage", 0) == 0:
        # Averaging gradients over one rank changes nothing but costs a flatten/copy of every gradient.
        engine.enable_backward_allreduce = False
    return engine


def carry_optimizer_state(old_engine, old_model: nn.Module, new_engine, new_model: nn.Module,
                          plan: PrunePlan) -> bool:
    """Slice AdamW moments into the slim engine's optimizer; False where the optimizer keeps no per-parameter state."""
    old_opt, new_opt = old_engine.optimizer, new_engine.optimizer
    if not (isinstance(old_opt, torch.optim.Optimizer) and isinstance(new_opt, torch.optim.Optimizer)):
        return False
    old_ids = {id(p) for g in old_opt.param_groups for p in g["params"]}
    if not any(id(p) in old_ids for p in old_model.parameters()):
        return False  # a wrapped optimizer (bf16/ZeRO) holds flat master copies instead
    transfer_adam_state(old_opt, old_model, new_opt, new_model, plan)
    return True


def fp32_values(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """fp32 CPU copies of `params`: DeepSpeed's fp32 masters where bf16/ZeRO 1-2 keep them (assembled with a
    collective: call on every rank), else the parameters themselves."""
    from deepspeed.utils import safe_get_full_fp32_param

    out = []
    for p in params:
        master = safe_get_full_fp32_param(p)
        out.append((master if master is not None else p).detach().float().cpu())
    return out
