"""The distillation teacher: the dense searched model at the draw, kept frozen beside the slim one and saved once in
the run folder, so that a resumed slim stage learns from the same teacher."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

TEACHER_FILE = "teacher.safetensors"


def take_teacher(full: torch.nn.Module, run_dir: Path, is_main: bool) -> torch.nn.Module:
    """A frozen copy of the dense model at the draw (coefficients attached), written to the run folder atomically."""
    teacher = copy.deepcopy(full).eval().requires_grad_(False)
    if is_main:
        tmp = run_dir / f"{TEACHER_FILE}.tmp"
        save_model(teacher, str(tmp))  # tied weights stored once
        tmp.replace(run_dir / TEACHER_FILE)
    return teacher


def restore_teacher(model: torch.nn.Module, attach: Callable[[torch.nn.Module], None], run_dir: Path):
    """The teacher of a resumed run: `model` (the run's starting model) with coefficients attached and the saved
    teacher's weights loaded."""
    attach(model)
    load_model(model, str(run_dir / TEACHER_FILE))
    return model.eval().requires_grad_(False)


def placed(teacher: torch.nn.Module, like: torch.nn.Module) -> torch.nn.Module:
    """The teacher on the trained model's device and in its floating dtype (bf16 under bf16 engines)."""
    param = next(p for p in like.parameters() if p.is_floating_point())
    return teacher.to(device=param.device, dtype=param.dtype)
