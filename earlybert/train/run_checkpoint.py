"""Run checkpoints: DeepSpeed state plus our trainer state, written atomically, the `latest` pointer last."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlybert.errors import EarlyBertError
from earlybert.train.distributed import DistInfo, barrier

STATE_FILE = "trainer_state.json"


def _write_json_atomically(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """This process's torch, numpy and Python RNG states (tensors and plain values only)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _deepspeed_records() -> list[type]:
    """Plain-data classes DeepSpeed 0.19 pickles into ZeRO and bf16 checkpoints (attributes only, no code run)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


class RunCheckpointer:
    """`RUN/checkpoints/step_N/` folders and a `latest` file naming the newest complete one."""

    def __init__(self, run_dir: str | os.PathLike, dist: DistInfo, keep_last: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.dist = dist
        self.keep_last = max(1, keep_last)

    def save(self, engine, step: int, state: dict[str, Any], files: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint of `engine` and `state`; JSON `files` go beside it. Collective: call on every rank."""
        try:
            return self._save(engine, step, state, files)
        except OSError as e:  # disk full, read-only folder...: the previous checkpoint is untouched
            if self.dist.world_size == 1:  # other ranks may still be writing into the shared folder
                shutil.rmtree(self.root / f".tmp-step_{step:08d}", ignore_errors=True)
            previous = latest_checkpoint(self.root.parent)
            raise EarlyBertError(f"could not write the checkpoint of step {step} in {self.root} ({e.strerror or e}); "
                                 f"the previous checkpoint {previous or '(none)'} is intact: free space or fix "
                                 "permissions, then resume=auto") from None

    def _save(self, engine, step: int, state: dict[str, Any], files: dict[str, Any] | None) -> Path:
        tag = f"step_{step:08d}"
        tmp_tag = f".tmp-{tag}"
        if self.dist.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.root / tmp_tag, ignore_errors=True)
        barrier()
        engine.save_checkpoint(str(self.root), tag=tmp_tag, save_latest=False)
        torch.save(rng_state(), self.root / tmp_tag / f"rng_rank{self.dist.rank}.pt")
        barrier()
        final = self.root / tag
        if self.dist.is_main:
            for name, data in (files or {}).items():
                _write_json_atomically(self.root / tmp_tag / name, data)
            _write_json_atomically(self.root / tmp_tag / STATE_FILE, state)  # last: marks the folder complete
            if final.exists():
                shutil.rmtree(final)
            os.replace(self.root / tmp_tag, final)
            (self.root / "latest.tmp").write_text(tag)
            os.replace(self.root / "latest.tmp", self.root / "latest")
            self._prune()
        barrier()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if (p / STATE_FILE).is_file())
        for old in done[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def read_state(folder: Path) -> dict[str, Any]:
        with open(folder / STATE_FILE, encoding="utf-8") as f:
            return json.load(f)

    def load(self, engine, folder: Path) -> None:
        """Load DeepSpeed state (weights, optimizer) and this rank's RNG state from `folder`.

        DeepSpeed unpickles its files without restrictions, so each is first read with
        `weights_only=True`: a file holding anything beyond tensors, plain containers and DeepSpeed's own
        record types (loss scaler settings, the ZeRO stage, fragment addresses) is refused.
        """
        for path in sorted(folder.glob("*.pt")):
            try:
                with torch.serialization.safe_globals(_deepspeed_records()):
                    torch.load(path, weights_only=True, map_location="cpu")
            except Exception as e:  # an UnpicklingError names the refused global
                raise EarlyBertError(f"checkpoint file {path} is not plain tensor data ({type(e).__name__}): "
                                     "refusing to load it; resume only from checkpoints this program wrote") from None
        load_path, _ = engine.load_checkpoint(str(folder.parent), tag=folder.name)
        if load_path is None:
            raise EarlyBertError(f"DeepSpeed could not load the checkpoint {folder}: it is incomplete; remove it")
        rng_file = folder / f"rng_rank{self.dist.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run (the `latest` pointer, else the newest folder with a state file)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    for partial in root.glob(".tmp-step_*"):
        warnings.warn(f"ignoring the partial checkpoint {partial} (a save was interrupted)", stacklevel=2)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: none (`""`), the run's latest (`auto`; none yet is a fresh start), or a
    given run or checkpoint folder (which must hold one)."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    found = latest_checkpoint(path) if path.is_dir() else None
    if found is None:
        raise EarlyBertError(
            f"resume={resume} holds no checkpoint: point it at a run folder with checkpoints, or use auto"
        )
    return found


def check_run_dir(run_dir: Path, resume: str, overwrite: bool) -> None:
    """Refuse to clobber a run: finished runs need overwrite=true, unfinished ones resume=auto or overwrite."""
    if resume or not run_dir.exists() or not any(run_dir.iterdir()) or overwrite:
        return
    finished = (run_dir / "summary.json").exists()
    what = "a finished run" if finished else "files of an earlier run"
    hint = "" if finished else "resume=auto to continue it or "
    raise EarlyBertError(f"output_dir {run_dir} holds {what}: pass {hint}overwrite=true to start over, "
                         "or choose another output_dir")


def start_run_dir(run_dir: Path, cfg: Any, overwrite: bool, resume_from: Path | None, is_main: bool) -> None:
    """On the main rank: clear the folder when starting over, create it, record the resolved config."""
    from earlybert.config import save_yaml

    if is_main:
        if overwrite and resume_from is None and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run_dir / "config.yaml")


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, written atomically and only by the recipes, last: its presence marks a finished run."""
    _write_json_atomically(Path(run_dir) / "summary.json", summary)
