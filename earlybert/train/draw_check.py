"""The collapse check: after the draw, does the slim model give back what the full model had learned before it?

The full model's progress before the draw is its mean training loss over its first `window` steps minus that
over its last `window` steps before the draw. The slim model's loss is then compared with the latter:
rewind: the slim stage reads the data from the start again, so its losses on those same last batches (after as
many updates) are used; continue: its first `window` steps after the draw. The share of the progress given back,
(slim - before) / progress, is about 0 for a sound ticket (below 0 when the slim model learns faster) and about 1
when the slim model is back where training started. Where the full model had not yet learned anything measurable
(progress under `MIN_PROGRESS` of its starting loss, typical of a draw early in a short fine-tuning run), there is
nothing to give back and the check says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIN_PROGRESS = 0.05  # of the starting loss: less is within step-to-step noise, and nothing is judged


@dataclass
class DrawCheck:
    """Collects training losses by data step around the draw and gives one verdict."""

    window: int
    limit: float
    """A share of the progress given back above `limit` is a collapse; 0: never warn (the numbers are kept)."""
    search_losses: dict[int, float] = field(default_factory=dict)
    slim_losses: dict[int, float] = field(default_factory=dict)
    draw_step: int | None = None
    rewind: bool = False
    verdict: dict[str, Any] | None = None

    def drawn(self, step: int, rewind: bool) -> None:
        """The ticket was drawn after `step` search steps."""
        self.draw_step, self.rewind = step, rewind

    def steps(self) -> tuple[range, range, range]:
        """(the full model's first data steps, its last before the draw, the slim model's compared)."""
        n = min(self.window, self.draw_step)
        before = range(self.draw_step - n, self.draw_step)
        return range(n), before, before if self.rewind else range(self.draw_step, self.draw_step + n)

    def record(self, searching: bool, data_step: int, loss: float) -> dict[str, Any] | None:
        """Record one step's loss; the verdict when this step completes the comparison, else None."""
        if searching:
            self.search_losses[data_step] = loss
            if data_step - self.window >= self.window:  # only the first `window` losses and the latest are needed
                del self.search_losses[data_step - self.window]
            return None
        if self.draw_step is None or self.verdict is not None:
            return None
        self.slim_losses[data_step] = loss
        return self.decide() if data_step >= self.steps()[2][-1] else None

    def decide(self) -> dict[str, Any] | None:
        """The verdict from what was recorded (a run that ended early compares the steps it had); None: no draw."""
        if self.draw_step is None or self.verdict is not None or self.draw_step == 0:
            return self.verdict
        first, before, after = self.steps()
        start, ref, slim = ([losses[s] for s in steps if s in losses] for losses, steps in
                            ((self.search_losses, first), (self.search_losses, before), (self.slim_losses, after)))
        if not (start and ref and slim):
            return None
        slim_steps = len(slim)
        start, ref, slim = (sum(v) / len(v) for v in (start, ref, slim))
        progress = start - ref
        judged = progress >= MIN_PROGRESS * start
        given_back = (slim - ref) / progress if judged else None
        self.verdict = {"start_loss": start, "before_loss": ref, "slim_loss": slim, "progress": progress,
                        "judged": judged, "given_back": given_back, "limit": self.limit,
                        "before_steps": [before[0] + 1, before[-1] + 1], "slim_steps": slim_steps,
                        "collapsed": bool(judged and self.limit and given_back > self.limit)}
        return self.verdict

    def message(self) -> str:
        """The verdict as one log line."""
        v = self.verdict
        if not v["judged"]:
            return (f"draw check: not judged: the full model's training loss fell only {v['start_loss']:.4g} -> "
                    f"{v['before_loss']:.4g} before the draw (under {MIN_PROGRESS:.0%}), so there was no progress "
                    "to lose yet; a later search.draw_at makes the check meaningful")
        where = "on the same batches" if self.rewind else "right after the draw"
        text = (f"draw check: slim training loss {v['slim_loss']:.4g} {where}, the full model's {v['before_loss']:.4g} "
                f"before the draw (down from {v['start_loss']:.4g}): {v['given_back']:.0%} of that progress given back")
        if not v["collapsed"]:
            return text + (f" (limit {v['limit']:.0%}): ok" if v["limit"] else "")
        return (text + f", above the {v['limit']:.0%} limit: WARNING: the slim model may have collapsed; expect "
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
