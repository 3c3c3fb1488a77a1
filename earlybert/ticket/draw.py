"""Draw tickets after the fact from the coefficient history a search saved."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from earlybert.errors import EarlyBertError
from earlybert.ticket.masks import MaskSpec, check_ratio
from earlybert.ticket.ticket import Ticket


def coefficient_files(run_dir: str | Path) -> dict[int, Path]:
    """Saved coefficient files of a search, by step."""
    folder = Path(run_dir) / "search"
    files = {int(p.stem.rsplit("_", 1)[1]): p for p in folder.glob("coefficients_step_*.safetensors")}
    if not files:
        raise EarlyBertError(f"{run_dir} holds no search coefficients (search/coefficients_step_*.safetensors): "
                             "pass the run folder of a ticket search")
    return dict(sorted(files.items()))


def run_ticket(run_dir: str | Path) -> dict | None:
    """The run's own ticket.json as a dict (None when the run has not drawn one)."""
    path = Path(run_dir) / "ticket.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EarlyBertError(f"{path} is not a valid ticket (corrupt JSON): pass --step to draw from the saved "
                             "coefficients without it, or restore the file") from None


def run_search_settings(run_dir: str | Path) -> dict:
    """The `search` section of the run's config.yaml (empty when it has none)."""
    import yaml

    try:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    search = config.get("search") if isinstance(config, dict) else None
    return search if isinstance(search, dict) else {}


def draw_from_run(run_dir: str | Path, heads_ratio: float, ffn_ratio: float, output: str | Path,
                  step: int | None = None, ffn_scope: str | None = None, overwrite: bool = False) -> Ticket:
    """Masks at new ratios from the coefficients saved at `step` (default: the drawn ticket's step, else the last).

    The rest of the mask spec (FFN scope, head floor, FFN rounding) is the run's own, from its ticket.json (else
    its config.yaml, else the defaults), so a ticket drawn at the run's ratios and step equals the run's ticket.
    """
    check_ratio("heads_ratio", heads_ratio)
    check_ratio("ffn_ratio", ffn_ratio)
    output = Path(output)
    if output.exists() and not overwrite:
        raise EarlyBertError(f"{output} exists: choose another --output or pass --overwrite")
    files = coefficient_files(run_dir)
    meta = run_ticket(run_dir) or run_search_settings(run_dir)
    spec = MaskSpec(heads_ratio=heads_ratio, ffn_ratio=ffn_ratio,
                    ffn_scope=ffn_scope or meta.get("ffn_scope", "global"),
                    min_heads_per_layer=meta.get("min_heads_per_layer", 1),
                    ffn_round_to=meta.get("ffn_round_to", MaskSpec.ffn_round_to))
    if step is None:
        drawn = meta.get("step")
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
                               ffn_scope=spec.ffn_scope, min_heads_per_layer=spec.min_heads_per_layer,
                               ffn_round_to=spec.ffn_round_to)
    ticket.save(output)
    return ticket
