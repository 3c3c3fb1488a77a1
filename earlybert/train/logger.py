"""Rank-0 logging: metrics.jsonl (always), console lines, a progress bar, tensorboard and wandb."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from earlybert.errors import EarlyBertError

BACKENDS = ("none", "wandb", "tensorboard")


class RunLogger:
    """Writes metrics on the main rank only; other ranks get a no-op logger."""

    def __init__(self, run_dir: Path, enabled: bool, report_to: str = "none", every: int = 10,
                 project: str = "earlybert", config: dict | None = None, total_steps: int = 0,
                 progress_bar: bool = True, start_step: int = 0):
        if report_to not in BACKENDS:
            raise EarlyBertError(f"log.report_to={report_to!r} is unknown: use one of {', '.join(BACKENDS)}")
        self.enabled, self.every = enabled, max(1, every)
        self.wandb = self.tb = self.bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        elif report_to == "wandb":
            import wandb

            if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
                os.environ["WANDB_MODE"] = "offline"  # no key: log locally, sync later with `wandb sync`
            self.wandb = wandb.init(project=project, dir=str(run_dir), config=config or {}, name=run_dir.name)
        if progress_bar and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, Any], console: bool | None = None) -> None:
        """Record metrics at `step`; print a console line every `every` steps (or when `console`)."""
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in numbers.items() if k in ("loss", "lr")}, refresh=True)
        if console if console is not None else step % self.every == 0:
            self.print(f"step {step}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))

    def print(self, text: str) -> None:
        """A console line (main rank only), kept clear of the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
