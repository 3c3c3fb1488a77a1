"""Model folders: load any supported HF or slim checkpoint; save atomically without clobbering."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import adapter_for_type

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt")


def load_model(path: str | os.PathLike, task: str | None = None, **kwargs) -> nn.Module:
    """Load a plain HF or slim folder of a supported family with the class its config names (or `task`'s class)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EarlyBertError(f"{path} is not a model folder (no config.json): pass a save_pretrained folder")
    try:
        with open(path / "config.json", encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EarlyBertError(f"{path}/config.json is not valid JSON ({e}): re-save the model") from None
    adapter = adapter_for_type(raw.get("model_type", "<missing>"))
    config = AutoConfig.from_pretrained(path)
    if task is not None:
        cls = adapter.slim_classes[task] if config.model_type.startswith("slim_") else adapter.hf_classes[task]
    else:
        arch = (raw.get("architectures") or [""])[0]
        cls = adapter.class_by_name(arch)
        if cls is None:
            supported = ", ".join(c.__name__ for c in adapter.hf_classes.values())
            raise EarlyBertError(f"architecture {arch!r} in {path} is not supported: use one of {supported}")
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # corrupt or truncated weights, bad shapes
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise EarlyBertError(f"the weights in {path} cannot be loaded ({reason}): re-save the model folder") from None


def load_gguf_model(folder: str, name: str):
    """A causal LM from a GGUF file (dequantized to fp32), with a one-line error if transformers cannot read it."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise EarlyBertError(f"{Path(folder) / name} cannot be loaded ({reason}): give a GGUF file of a supported "
                             "decoder and install `gguf` (pip install gguf)") from None


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing non-empty output folder unless `overwrite`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise EarlyBertError(f"output {path} exists and is not empty: choose a new folder or pass --overwrite")
    return path


def write_dir_atomically(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(tmp)` on a temporary sibling folder, then move it into place in one rename."""
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        write(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def copy_tokenizer_files(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Copy the tokenizer files of a model folder (if any) so the output stays a complete checkpoint."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied
