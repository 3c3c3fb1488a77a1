"""Early-bird detection: the ticket is drawn once recent masks stop moving."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from earlybert.errors import EarlyBertError
from earlybert.ticket.masks import hamming_distance

Masks = list[torch.Tensor]


@dataclass
class Check:
    """One detector check: its step and the largest distance of the newest mask to the queued ones."""

    step: int
    heads_distance: float | None
    ffn_distance: float | None
    fired: bool
    tied: bool = False
    """Equal coefficients straddled a cut: the masks were decided by index order, so no firing."""


class EarlyBirdDetector:
    """FIFO of the last `window` masks; fires when the newest is within `threshold` of every other.

    Distances are normalized Hamming distances, computed separately for heads and FFN neurons;
    both maxima must be <= threshold, and the queue must be full.
    """

    def __init__(self, window: int = 5, threshold: float = 0.1):
        if window < 2:
            raise EarlyBertError(f"detector window={window} must be >= 2: it compares the newest mask to older ones")
        if not 0.0 <= threshold <= 1.0:
            raise EarlyBertError(f"detector threshold={threshold} must lie in [0, 1]")
        self.window = window
        self.threshold = threshold
        self.queue: deque[tuple[Masks, Masks]] = deque(maxlen=window)
        self.history: list[Check] = []
        self.fired_at: int | None = None

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    def update(self, step: int, heads: Masks, ffn: Masks, tied: bool = False) -> bool:
        """Queue the masks drawn at `step`; return True when the early bird fires (first time only).

        Masks drawn from tied scores are queued but never fire: a queue of ties "converges" on index order.
        """
        self.queue.append(([m.clone() for m in heads], [m.clone() for m in ffn]))
        newest_h, newest_f = self.queue[-1]
        older = list(self.queue)[:-1]
        dh = max((hamming_distance(newest_h, h) for h, _ in older), default=None)
        df = max((hamming_distance(newest_f, f) for _, f in older), default=None)
        fire = (
            not self.fired
            and not tied
            and not any(c.tied for c in self.history[-(self.window - 1):])
            and len(self.queue) == self.window
            and dh is not None
            and dh <= self.threshold
            and df <= self.threshold
        )
        if fire:
            self.fired_at = step
        self.history.append(Check(step, dh, df, fire, tied))
        return fire

    def history_dicts(self) -> list[dict[str, Any]]:
        """The distance history as plain dicts (for tickets, logs and reports)."""
        return [vars(c).copy() for c in self.history]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as JSON-friendly values."""
        return {
            "window": self.window,
            "threshold": self.threshold,
            "queue": [
                {"heads": [m.tolist() for m in h], "ffn": [m.tolist() for m in f]} for h, f in self.queue
            ],
            "history": self.history_dicts(),
            "fired_at": self.fired_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by `state_dict`."""
        self.window = int(state["window"])
        self.threshold = float(state["threshold"])
        self.queue = deque(maxlen=self.window)
        for entry in state["queue"]:
            heads = [torch.tensor(m, dtype=torch.int8) for m in entry["heads"]]
            ffn = [torch.tensor(m, dtype=torch.int8) for m in entry["ffn"]]
            self.queue.append((heads, ffn))
        self.history = [Check(**c) for c in state["history"]]
        self.fired_at = state["fired_at"]
