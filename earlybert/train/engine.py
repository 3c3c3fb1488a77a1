"""DeepSpeed engines: config resolution, parameter groups, and carrying AdamW state across a shrink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from earlybert.config import packaged_path
from earlybert.dsee.update import attach_updates, update_shapes
from earlybert.errors import EarlyBertError
from earlybert.ticket.coefficients import attach_coefficients, has_coefficients, is_coefficient_name
from earlybert.ticket.shrink import PrunePlan, apply_plan, transfer_adam_state
from earlybert.train.distributed import DistInfo
from earlybert.train.trainer_config import TrainConfig

AUTO = "auto"
FP16_DYNAMIC_SCALING = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                        "hysteresis": 2, "min_loss_scale": 1}


def auto_deepspeed_json(device: str, bf16_supported: bool, world_size: int) -> dict[str, Any]:
    """What `train.deepspeed_config: auto` resolves to: bf16 on a CUDA device that has it, else fp16 with dynamic
    loss scaling; ZeRO-1 with more than one rank, else ZeRO-0; fp32 ZeRO-0 on a CPU."""
    config: dict[str, Any] = {key: AUTO for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                                   "gradient_clipping")}
    if device != "cuda":
        return {**config, "zero_optimization": {"stage": 0}, "bf16": {"enabled": False}, "fp16": {"enabled": False}}
    config["zero_optimization"] = {"stage": 1 if world_size > 1 else 0}
    if bf16_supported:
        config["bf16"] = {"enabled": True}
    else:
        config["fp16"] = dict(FP16_DYNAMIC_SCALING)
    return config


def accelerator() -> tuple[str, bool]:
    """(device name, whether it computes in bf16) of the accelerator DeepSpeed trains on."""
    from deepspeed.accelerator import get_accelerator

    device = get_accelerator().device_name()
    return device, device == "cuda" and bool(get_accelerator().is_bf16_supported())


def deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON (`auto`: chosen for the device) with its `auto` values (batch, accumulation, clipping)
    filled from `train`."""
    if train.deepspeed_config == AUTO:
        path, config = Path(AUTO), auto_deepspeed_json(*accelerator(), world_size)
    else:
        path = packaged_path(train.deepspeed_config)
        if not path.is_file():
            raise EarlyBertError(f"DeepSpeed config {path} does not exist: set train.deepspeed_config to a JSON file "
                                 "or to auto")
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
    stage = _zero_stage(config)
    if stage not in (0, 1, 2, 3):
        raise EarlyBertError(f"{path} sets zero_optimization.stage={stage!r}: ZeRO has stages 0, 1, 2 and 3")
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


def precision(config: dict[str, Any]) -> str:
    """A DeepSpeed JSON's training precision and ZeRO stage, e.g. "bf16 ZeRO-1"."""
    kind = "bf16" if config.get("bf16", {}).get("enabled") else "fp16" if config.get("fp16", {}).get("enabled") \
        else "fp32"
    return f"{kind} ZeRO-{_zero_stage(config)}"


def build_engine(objective: nn.Module, train: TrainConfig, dist: DistInfo, coefficient_lr: float = 0.0,
                 clip_outside: bool = False, config: dict[str, Any] | None = None):
    """A DeepSpeed engine around `objective`, with a torch AdamW unless the JSON names an optimizer.

    `clip_outside`: the caller runs `check_and_clip_gradients` before every optimizer step; where gradients
    sit on the parameters until the step (fp32 ZeRO-0, our AdamW) DeepSpeed's own clipping is then turned off,
    so the global norm is taken once, in one foreach pass, instead of twice, parameter by parameter.
    """
    import deepspeed

    config = dict(config or deepspeed_config(train, dist.world_size))
    if clip_outside and _plain_fp32(config) and "optimizer" not in config:
        config["gradient_clipping"] = 0.0
    groups = parameter_groups(objective, train.weight_decay, coefficient_lr)
    if "optimizer" in config:
        engine, *_ = deepspeed.initialize(model=objective, model_parameters=groups, config=config)
    else:
        # A client optimizer avoids JIT-building DeepSpeed's ops on CPU and keeps per-parameter state we can slice.
        optimizer = adamw(groups, train)
        engine, *_ = deepspeed.initialize(model=objective, optimizer=optimizer, config=config)
    if dist.world_size == 1 and _zero_stage(config) == 0:
        # Averaging gradients over one rank changes nothing but costs a flatten/copy of every gradient.
        engine.enable_backward_allreduce = False
    return engine


def check_and_clip_gradients(engine, max_norm: float) -> torch.Tensor | None:
    """The global gradient norm where gradients sit on the parameters (None elsewhere), in one foreach pass;
    clips them to `max_norm` where DeepSpeed does not (`build_engine(clip_outside=True)`) and the norm is finite.

    The scale is DeepSpeed's and torch's: max_norm / (norm + 1e-6) where that is below 1.
    """
    params = [p for p in engine.module.parameters() if p.grad is not None]
    if not params:
        return None
    norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    if max_norm > 0 and engine.gradient_clipping() == 0 and torch.isfinite(norm):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm


def _zero_stage(config: dict[str, Any]) -> int:
    return config.get("zero_optimization", {}).get("stage", 0)


def _plain_fp32(config: dict[str, Any]) -> bool:
    """Whether DeepSpeed leaves gradients on the parameters until the step: ZeRO-0 without bf16/fp16."""
    return (_zero_stage(config) == 0 and not config.get("bf16", {}).get("enabled")
            and not config.get("fp16", {}).get("enabled"))


ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


def _adam_steps(optimizer) -> float | None:
    """The AdamW step count of an optimizer's (inner, for DeepSpeed wrappers) state, None before its first step."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for state in getattr(inner, "state", {}).values():
        if "step" in state:
            return float(state["step"])
    return None


def _plain_state(optimizer, model: nn.Module) -> bool:
    """Whether a torch optimizer keeps per-parameter state for `model` itself (fp32, ZeRO-0)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        return False
    ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
    return any(id(p) in ids for p in model.parameters())


def adamw(groups: list[dict[str, Any]], train: TrainConfig) -> torch.optim.AdamW:
    """torch's AdamW, fused (one kernel over all tensors, the same update to float rounding) where this torch
    build has it for the parameters' device, else the multi-tensor version."""
    kwargs = {"lr": train.lr, "betas": tuple(train.betas), "eps": train.eps}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def implementation(optimizer: torch.optim.Optimizer) -> str:
    """How a torch optimizer runs its update: fused, foreach (multi-tensor) or per-tensor."""
    defaults = optimizer.defaults
    return "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "per-tensor"


def optimizer_name(engine) -> str:
    """What updates the weights, for summary.json: the (inner) optimizer's class and implementation."""
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    how = implementation(inner)
    wrapper = "" if inner is engine.optimizer else f" in DeepSpeed's {type(engine.optimizer).__name__}"
    return f"{type(inner).__module__.split('.')[0]} {type(inner).__name__} ({how}){wrapper}"


def carry_optimizer_state(old_engine, old_model: nn.Module, new_engine, new_model: nn.Module,
                          plan: PrunePlan) -> bool:
    """Slice the full model's AdamW moments into the slim engine's optimizer and carry its step count.

    A plain optimizer keeps per-parameter state; ZeRO 1-3 and the bf16 wrappers keep partitioned flat fp32
    copies that DeepSpeed assembles and scatters (collective: call on every rank); bf16 ZeRO-0 an fp32 copy per
    parameter. False, and the slim optimizer starts fresh, where the state is not reachable (an optimizer the
    DeepSpeed JSON names, other than a torch AdamW).
    """
    from deepspeed.utils import safe_get_full_optimizer_state

    old_opt, new_opt = old_engine.optimizer, new_engine.optimizer
    if _plain_state(old_opt, old_model) and isinstance(new_opt, torch.optim.Optimizer):
        transfer_adam_state(old_opt, old_model, new_opt, new_model, plan)
        return True
    if hasattr(old_opt, "fp32_groups") and hasattr(new_opt, "fp32_groups"):  # bf16 ZeRO-0: fp32 copy per parameter
        return _carry_unfused(old_opt, old_model, new_opt, new_model, plan)
    steps, inner = _adam_steps(old_opt), getattr(new_opt, "optimizer", None)
    if steps is None or not isinstance(inner, torch.optim.AdamW) or not hasattr(old_opt, "optimizer"):
        return False
    _link_state(old_opt)
    _prime_adam_state(new_opt, steps)
    new_params = dict(new_model.named_parameters())
    for name, p in old_model.named_parameters():
        if name not in new_params:
            continue  # coefficients are gone from the slim model
        for key in ADAM_MOMENTS:
            full = safe_get_full_optimizer_state(p, key)
            if full is None:
                return False
            full = full.reshape(p.ds_shape if hasattr(p, "ds_shape") else p.shape)
            _set_full_state(new_params[name], apply_plan({name: full}, plan)[name], key)
    return True


def _set_full_state(param: torch.Tensor, value: torch.Tensor, key: str) -> None:
    """DeepSpeed's `safe_set_full_optimizer_state`, but under ZeRO-3 each rank writes its own padded share
    (0.19.8's full setter reads past the end for the last rank when the size does not divide evenly)."""
    from deepspeed.utils import safe_set_full_optimizer_state, safe_set_local_optimizer_state

    if not hasattr(param, "ds_id"):
        safe_set_full_optimizer_state(param, value, key)
        return
    share, rank = param.ds_tensor.numel(), torch.distributed.get_rank()
    padded = torch.zeros(share * torch.distributed.get_world_size(), dtype=torch.float32)
    padded[: value.numel()] = value.flatten()
    safe_set_local_optimizer_state(param, padded[rank * share:(rank + 1) * share], key)


def _carry_unfused(old_opt, old_model: nn.Module, new_opt, new_model: nn.Module, plan: PrunePlan) -> bool:
    """Carry AdamW state between DeepSpeed's unfused wrappers, whose inner optimizer keys it by fp32 copies."""
    def masters(wrapper, model: nn.Module) -> dict[str, torch.Tensor]:
        copies = {id(lp): hp for lps, hps in zip(wrapper.fp16_groups, wrapper.fp32_groups) for lp, hp in zip(lps, hps)}
        return {name: copies[id(p)] for name, p in model.named_parameters() if id(p) in copies}

    old, new = masters(old_opt, old_model), masters(new_opt, new_model)
    for name, hp in new.items():
        state = old_opt.optimizer.state.get(old.get(name))
        if not state:
            return False
        new_opt.optimizer.state[hp] = {k: apply_plan({name: v}, plan)[name].clone() if v.shape == old[name].shape
                                       else v.clone() for k, v in state.items()}
    return True


def _prime_adam_state(wrapper, steps: float) -> None:
    """Give a DeepSpeed wrapper's inner AdamW zero moments and the full model's step count (bias correction
    goes on from there) before its first step, so DeepSpeed can address them per parameter."""
    inner = wrapper.optimizer
    # The flat fp32 partitions the wrapper steps (it swaps them into the inner optimizer's groups per step).
    for attribute in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat", "fp32_groups_flat_partition"):
        flats = getattr(wrapper, attribute, None)
        if flats is not None:
            break
    else:
        flats = [p for group in inner.param_groups for p in group["params"]]
    for flat in flats:
        if flat is not None:
            state = inner.state[flat]
            state.setdefault("exp_avg", torch.zeros_like(flat))
            state.setdefault("exp_avg_sq", torch.zeros_like(flat))
            state["step"] = torch.tensor(float(steps))
    _link_state(wrapper)


def _link_state(wrapper) -> None:
    """(Re)map each parameter of ZeRO 1-2 / the bf16 optimizer into the flat AdamW state. DeepSpeed links them
    once, after the first step, and leaves a group whose state appeared later unlinked (seen with a second
    no-decay group in 0.19.8)."""
    if hasattr(wrapper, "_lazy_init_hp_params_optimizer_state"):
        wrapper._hp_optimizer_states_linked = False
        wrapper._lazy_init_hp_params_optimizer_state()


def fp32_values(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """fp32 CPU copies of `params`: DeepSpeed's fp32 masters where bf16/ZeRO keep them (assembled with a
    collective: call on every rank), else the parameters themselves."""
    from deepspeed.utils import safe_get_full_fp32_param

    out = []
    for p in params:
        master = safe_get_full_fp32_param(p)
        out.append((master if master is not None else p).detach().float().cpu())
    return out


def consolidated_copy(model: nn.Module) -> nn.Module:
    """A plain fp32 CPU copy of a model DeepSpeed trains, with its full weights (collective under ZeRO).

    Under ZeRO-3 the model's own parameters are empty partitions; under bf16 they are rounded copies:
    the copy takes DeepSpeed's fp32 masters instead, and buffers from the model.
    """
    names, params = zip(*model.named_parameters())
    state = dict(zip(names, fp32_values(list(params))))
    with torch.device("meta"):  # no random init: every tensor is filled below
        copy = type(model)(model.config)
        if has_coefficients(model):
            attach_coefficients(copy)
        attach_updates(copy, update_shapes(model))  # DSEE's updates, where the model carries them
    copy = copy.to_empty(device="cpu")
    # Tie first (the MLM decoder shares the word embeddings again), then load: tied names appear once in
    # named_parameters(), and XLM-R ties in the other direction, which would copy an unfilled tensor over.
    copy.tie_weights()
    copy.load_state_dict(state, strict=False)
    filled = {id(copy.get_parameter(name)) for name in state}
    unfilled = [n for n, p in copy.named_parameters() if id(p) not in filled]
    if unfilled:  # a parameter neither loaded nor tied to a loaded one would hold uninitialised memory
        raise RuntimeError(f"consolidating {type(model).__name__} left {unfilled[:3]} unfilled")
    for name, buffer in model.named_buffers():  # non-persistent buffers (position ids) are not in a state dict
        copy.get_buffer(name).copy_(buffer.detach())
    return copy.train(model.training)
