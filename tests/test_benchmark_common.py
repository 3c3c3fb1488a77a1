"""The benchmarks' shared statistics and input checks: what every comparison in RESULTS.md is read through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.common import Turns, alternate, in_fresh_process, in_turns, median_ci95, paired, round_speedups

REPO = Path(__file__).resolve().parents[1]


def test_paired_ratios_are_taken_within_each_round():
    # Round 2 is slow for both sides: paired within rounds the ratio stays 2; medians alone would mix rounds.
    spread = {"a": {"runs": [2.0, 20.0, 4.0]}, "b": {"runs": [1.0, 10.0, 2.0]}}
    ratio = paired(spread, "a", "b")
    assert (ratio["median"], ratio["min"], ratio["max"]) == (2.0, 2.0, 2.0)
    assert ratio["median_ci95"] == [2.0, 2.0]


def test_whole_run_speedups_divide_the_slow_by_the_fast_in_the_same_round():
    # `alternate_runs` seconds: the machine slows 5x in round 2; per round "fast" is still 2x, 4x, 2x faster.
    times = {"slow": [4.0, 40.0, 8.0], "fast": [2.0, 10.0, 4.0]}
    speed = round_speedups(times, "slow", "fast")
    assert speed["rounds"] == [2.0, 4.0, 2.0]
    assert (speed["median"], speed["min"], speed["max"]) == (2.0, 2.0, 4.0)
    with pytest.raises(ValueError):  # a variant that missed a round cannot be paired
        round_speedups({"slow": [1.0, 2.0], "fast": [1.0]}, "slow", "fast")


def test_a_fresh_process_run_returns_its_result_from_another_process():
    # What one trainer leaves in its process (allocator state, caches) must not reach the next run.
    assert in_fresh_process(os.getpid) != os.getpid()
    assert in_fresh_process(sorted, [3, 1, 2]) == [1, 2, 3]


def test_a_fresh_process_starts_with_the_given_environment_and_this_one_keeps_its_own(monkeypatch):
    # Each side of a comparison can start with the environment it is given.
    monkeypatch.setenv("EARLYBERT_KEPT", "here")
    monkeypatch.delenv("EARLYBERT_ONLY_THERE", raising=False)
    env = {"EARLYBERT_KEPT": "there", "EARLYBERT_ONLY_THERE": "1"}
    assert in_fresh_process(os.getenv, "EARLYBERT_KEPT", env=env) == "there"
    assert in_fresh_process(os.getenv, "EARLYBERT_ONLY_THERE", env=env) == "1"
    assert os.environ["EARLYBERT_KEPT"] == "here" and "EARLYBERT_ONLY_THERE" not in os.environ


def three_turns(turns: Turns) -> list[tuple[float, float]]:
    """A side's work in `in_turns`: three turns of 50 ms, each turn's start and end on the shared clock."""
    spans = []
    for _ in range(3):
        turns.take()
        start = time.monotonic()
        time.sleep(0.05)
        spans.append((start, time.monotonic()))
        turns.hand_over()
    return spans


def failing_side(turns: Turns) -> None:
    raise ValueError("this side fails")


@pytest.mark.slow
@pytest.mark.parametrize("first", ["a", "b"])
def test_sides_taking_turns_never_overlap_and_alternate_from_the_first(first):
    # The MLM lockstep benchmark's premise: while one trainer steps, the other waits.
    spans = in_turns({"a": three_turns, "b": three_turns}, first=first)
    timeline = sorted((start, end, name) for name, side in spans.items() for start, end in side)
    assert [name for _, _, name in timeline] == ([first, "b" if first == "a" else "a"] * 3)
    assert all(end <= next_start for (_, end, _), (next_start, _, _) in zip(timeline, timeline[1:]))


@pytest.mark.slow
def test_a_failing_side_stops_the_turn_taking_instead_of_hanging():
    with pytest.raises(RuntimeError, match="exit codes"):
        in_turns({"a": three_turns, "b": failing_side}, first="a", timeout_s=60)


def test_the_median_interval_brackets_the_median_and_narrows_with_rounds():
    few = [1.0, 1.2, 1.4, 1.6, 1.8]
    many = few * 8
    low, high = median_ci95(few)
    assert low <= 1.4 <= high and high - low > 0
    many_low, many_high = median_ci95(many)
    assert many_high - many_low < high - low


def test_alternate_calls_every_variant_each_round_odd_rounds_reversed():
    calls = []
    spread = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a b | b a | a b
    assert len(spread["a"]["runs"]) == len(spread["b"]["runs"]) == 3


def pool(tmp_path: Path, earlier: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    return subprocess.run([sys.executable, "-m", "benchmarks.pretrain_vs_hf", "--pool", str(path), *args,
                           "--out", str(tmp_path / "out.json")], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("earlier, message", [
    ({"steps": 30, "precision": "fp32"}, "not a results JSON of this benchmark"),
    ({"steps": 8, "precision": "fp32", "in_trainer_step_s": {"ours_vs_hf_speed_rounds": [1.5]}},
     "ran --steps 8 --precision fp32, this run --steps 30"),
])
@pytest.mark.slow
def test_pooling_refuses_other_runs_before_any_work(tmp_path, earlier, message):
    result = pool(tmp_path, earlier, "--steps", "30")
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.json").exists()
