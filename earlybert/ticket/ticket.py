"""The ticket file: which heads and FFN neurons survive, as JSON (the contract between search and shrink)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import supported_families

FORMAT = "earlybert-ticket/1"


@dataclass
class Ticket:
    """Per-layer keep-masks for heads and FFN neurons plus free-form metadata."""

    model_type: str
    heads: list[list[int]]
    ffn: list[list[int]]
    metadata: dict[str, Any] = field(default_factory=dict)
    coefficients: dict[str, list[list[float]]] | None = None
    """Coefficient values at draw time (`heads`, `ffn`), used by shrink to fold them in."""

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def layer_heads(self) -> list[int]:
        """Heads kept per layer."""
        return [sum(h) for h in self.heads]

    def layer_ffn(self) -> list[int]:
        """FFN neurons kept per layer."""
        return [sum(f) for f in self.ffn]

    def check_uniform(self, source: str) -> None:
        """Refuse a ticket whose layers keep different head counts or FFN widths, naming the layers that differ."""
        sizes = list(zip(self.layer_heads(), self.layer_ffn()))
        odd = [i for i, size in enumerate(sizes) if size != sizes[0]]
        if odd:
            shown = ", ".join(f"layer {i}: {sizes[i][0]} heads, {sizes[i][1]} neurons" for i in [0, *odd[:3]])
            raise EarlyBertError(f"{source} keeps different sizes in layers {', '.join(map(str, odd))} than in layer 0 "
                                 f"({shown}), and search.uniform=true needs the same in every layer: draw it with "
                                 "ffn_scope=layer, or set search.uniform=false")

    def to_dict(self) -> dict[str, Any]:
        head_counts = {len(h) for h in self.heads}
        ffn_counts = {len(f) for f in self.ffn}
        out: dict[str, Any] = {
            "format": FORMAT,
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "num_heads": head_counts.pop() if len(head_counts) == 1 else [len(h) for h in self.heads],
            "intermediate_size": ffn_counts.pop() if len(ffn_counts) == 1 else [len(f) for f in self.ffn],
            "heads": self.heads,
            "ffn": self.ffn,
            "heads_kept": self.layer_heads(),
            "ffn_kept": self.layer_ffn(),
            **self.metadata,
        }
        if self.coefficients is not None:
            out["coefficients"] = self.coefficients
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the ticket atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)

    @classmethod
    def from_masks(
        cls,
        model_type: str,
        heads: list[torch.Tensor],
        ffn: list[torch.Tensor],
        coefficients: dict[str, list[torch.Tensor]] | None = None,
        **metadata: Any,
    ) -> Ticket:
        """Build a ticket from per-layer 0/1 tensors (and optionally the coefficients they came from)."""
        coefs = None
        if coefficients is not None:
            coefs = {k: [[float(x) for x in t.detach().cpu().flatten()] for t in v] for k, v in coefficients.items()}
        ticket = cls(
            model_type=model_type,
            heads=[[int(x) for x in m.flatten()] for m in heads],
            ffn=[[int(x) for x in m.flatten()] for m in ffn],
            metadata=dict(metadata),
            coefficients=coefs,
        )
        ticket.check()
        return ticket

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ticket:
        """Read and validate a ticket file."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise EarlyBertError(f"ticket file {path} does not exist: pass the ticket.json a search wrote") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EarlyBertError(f"ticket file {path} is not valid JSON ({e}): pass a ticket.json") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "ticket") -> Ticket:
        """Validate a parsed ticket dictionary and build the ticket."""
        if not isinstance(data, dict):
            raise EarlyBertError(f"{source} is not a ticket: expected a JSON object with format {FORMAT!r}")
        if data.get("format") != FORMAT:
            raise EarlyBertError(
                f"{source} has format {data.get('format')!r}, expected {FORMAT!r}: draw it again with this version"
            )
        for key in ("model_type", "heads", "ffn"):
            if key not in data:
                raise EarlyBertError(f"{source} lacks the {key!r} field: draw the ticket again")
        known = {"format", "model_type", "num_layers", "num_heads", "intermediate_size", "heads", "ffn",
                 "heads_kept", "ffn_kept", "coefficients"}
        ticket = cls(
            model_type=data["model_type"],
            heads=data["heads"],
            ffn=data["ffn"],
            metadata={k: v for k, v in data.items() if k not in known},
            coefficients=data.get("coefficients"),
        )
        ticket.check(source)
        return ticket

    def check(self, source: str = "ticket") -> None:
        """Check the masks are 0/1 lists of lists and that no layer loses all its heads."""
        for name in ("heads", "ffn"):
            rows = getattr(self, name)
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise EarlyBertError(f"{source}: {name!r} must be a list of per-layer 0/1 lists")
            if any(v not in (0, 1) or isinstance(v, bool) for r in rows for v in r):
                raise EarlyBertError(f"{source}: {name!r} holds values other than 0 and 1")
        if len(self.heads) != len(self.ffn):
            raise EarlyBertError(
                f"{source}: {len(self.heads)} head layers but {len(self.ffn)} FFN layers: "
                "the masks must cover every layer"
            )
        for layer, row in enumerate(self.heads):
            if row and sum(row) == 0:
                raise EarlyBertError(
                    f"{source}: layer {layer} prunes every head: keep at least one head per layer"
                )
        if self.coefficients is not None:
            for name in ("heads", "ffn"):
                shape = [len(r) for r in getattr(self, name)]
                got = [len(r) for r in self.coefficients.get(name, [])]
                if got != shape:
                    raise EarlyBertError(f"{source}: coefficients[{name!r}] do not match the {name} mask shapes")

    def check_shapes(self, model_type: str, layer_heads: list[int], layer_ffn: list[int]) -> None:
        """Raise unless the ticket fits a model with these per-layer head counts and FFN widths."""
        base = model_type.removeprefix("slim_")
        if self.model_type.removeprefix("slim_") != base:
            raise EarlyBertError(f"ticket is for model type {self.model_type!r}, the model is {model_type!r}: draw the "
                                 f"ticket from this model (families: {', '.join(supported_families())})")
        got_h = [len(r) for r in self.heads]
        got_f = [len(r) for r in self.ffn]
        if got_h != list(layer_heads) or got_f != list(layer_ffn):
            raise EarlyBertError(
                f"ticket shapes (heads {_short(got_h)}, ffn {_short(got_f)}) do not match the model "
                f"(heads {_short(layer_heads)}, ffn {_short(layer_ffn)}): draw the ticket from this model"
            )


def _short(values: list[int]) -> str:
    """`12 x [12]` for uniform lists, the list itself otherwise."""
    if values and len(set(values)) == 1:
        return f"{len(values)} x [{values[0]}]"
    return str(values)
