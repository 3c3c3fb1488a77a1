"""The collapse check: after the draw, is the slim model's training loss far above the full model's before it?

Rewind: the slim stage reads the data from the start again, so its losses on the last `window` batches before
the draw step (the same batches, after as many updates) are compared with the searched model's on those batches.
Continue: the slim model's first `window` steps after the draw against the searched model's last `window` before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DrawCheck:
    """Collects training losses by data step around the draw and gives one verdict."""

    window: int
    limit: float
    """Slim mean loss above `limit` x the reference is a collapse; 0: never warn (the numbers are still kept)."""
    search_losses: dict[int, float] = field(default_factory=dict)
    slim_losses: dict[int, float] = field(default_factory=dict)
    draw_step: int | None = None
    rewind: bool = False
    verdict: dict[str, Any] | None = None

    def drawn(self, step: int, rewind: bool) -> None:
        """The ticket was drawn after `step` search steps."""
        self.draw_step, self.rewind = step, rewind
        self.search_losses = {s: v for s, v in self.search_losses.items() if s >= step - self.window}

    def steps(self) -> tuple[range, range]:
        """(reference data steps, slim data steps) compared."""
        n = min(self.window, self.draw_step)
        before = range(self.draw_step - n, self.draw_step)
        return before, before if self.rewind else range(self.draw_step, self.draw_step + n)

    def record(self, searching: bool, data_step: int, loss: float) -> dict[str, Any] | None:
        """Record one step's loss; the verdict when this step completes the comparison, else None."""
        if searching:
            self.search_losses[data_step] = loss
            return None
        if self.draw_step is None or self.verdict is not None:
            return None
        self.slim_losses[data_step] = loss
        _, after = self.steps()
        return self.decide() if data_step >= after[-1] else None

    def decide(self) -> dict[str, Any] | None:
        """The verdict from what was recorded (a run that ended early compares the steps it had); None: no draw."""
        if self.draw_step is None or self.verdict is not None or self.draw_step == 0:
            return self.verdict
        before, after = self.steps()
        reference = [self.search_losses[s] for s in before if s in self.search_losses]
        slim = [self.slim_losses[s] for s in after if s in self.slim_losses]
        if not reference or not slim:
            return None
        ref, mean = sum(reference) / len(reference), sum(slim) / len(slim)
        ratio = mean / ref if ref > 0 else float("inf")
        self.verdict = {"reference_loss": ref, "slim_loss": mean, "ratio": ratio, "limit": self.limit,
                        "reference_steps": [before[0] + 1, before[-1] + 1], "slim_steps": len(slim),
                        "collapsed": bool(self.limit) and ratio > self.limit}
        return self.verdict

    def message(self) -> str:
        """The verdict as one log line."""
        v = self.verdict
        where = "on the same batches" if self.rewind else "over the steps after the draw"
        text = (f"draw check: slim training loss {v['slim_loss']:.4g} {where} vs {v['reference_loss']:.4g} for the "
                f"full model before the draw ({v['ratio']:.2f}x")
        if not v["collapsed"]:
            return text + (f", limit {v['limit']:g}x): ok" if v["limit"] else ")")
        return (text + f", above the {v['limit']:g}x limit): WARNING: the slim model may have collapsed; expect "
                "dev accuracy far below the full model's - try search.weights=rewind, smaller search.heads_ratio / "
                "search.ffn_ratio, or a later draw")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the check exactly."""
        return {"search_losses": list(self.search_losses.items()), "slim_losses": list(self.slim_losses.items()),
                "draw_step": self.draw_step, "rewind": self.rewind, "verdict": self.verdict}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        self.search_losses, self.slim_losses = dict(state["search_losses"]), dict(state["slim_losses"])
        self.draw_step, self.rewind, self.verdict = state["draw_step"], state["rewind"], state["verdict"]
