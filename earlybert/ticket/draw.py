"""Draw tickets after the fact from the coefficient history a search saved."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from earlybert.errors import EarlyBertError
from earlybert.ticket.masks import MaskSpec
from earlybert.ticket.ticket import Ticket


def coefficient_files(run_dir: str | Path) -> dict[int, Path]:
    """Saved coefficient files of a search, by step."""
    folder = Path(run_dir) / "search"
    files = {int(p.stem.rsplit("_", 1)[1]): p for p in folder.glob("coefficients_step_*.safetensors")}
    if not files:
        raise EarlyBertError(f"{run_dir} holds no search coefficients (search/coefficients_step_*.safetensors): "
                             "pass the run folder of a ticket search")
    return dict(sorted(files.items()))


def draw_from_run(run_dir: str | Path, heads_ratio: float, ffn_ratio: float, output: str | Path,
                  step: int | None = None, ffn_scope: str = "global", overwrite: bool = False) -> Ticket:
    """Masks at new ratios from the coefficients saved at `step` (default: the drawn ticket's step, else the last)."""
    spec = MaskSpec(heads_ratio=heads_ratio, ffn_ratio=ffn_ratio, ffn_scope=ffn_scope)
    output = Path(output)
    if output.exists() and not overwrite:
        raise EarlyBertError(f"{output} exists: choose another --output or pass --overwrite")
    files = coefficient_files(run_dir)
    if step is None:
        ticket_file = Path(run_dir) / "ticket.json"
        drawn = json.loads(ticket_file.read_text()).get("step") if ticket_file.is_file() else None
        step = drawn if drawn in files else max(files)
    if step not in files:
        raise EarlyBertError(f"no coefficients saved at step {step}: available steps are {', '.join(map(str, files))}")
    with safe_open(str(files[step]), framework="pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
        n = len([k for k in keys if k.startswith("heads.")])
        heads_c = [f.get_tensor(f"heads.{i}") for i in range(n)]
        ffn_c = [f.get_tensor(f"ffn.{i}") for i in range(n)]
    heads, ffn = spec.masks(heads_c, ffn_c)
    ticket = Ticket.from_masks(meta["model_type"], heads, ffn, coefficients={"heads": heads_c, "ffn": ffn_c},
                               step=step, source_run=str(run_dir), heads_ratio=heads_ratio, ffn_ratio=ffn_ratio,
                               ffn_scope=ffn_scope)
    ticket.save(output)
    return ticket
