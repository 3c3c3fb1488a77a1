"""Shared timing helpers: alternate the variants in one process, report medians and ratios."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import queue
import random
import statistics
import sys
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, NoReturn

from earlybert.report.machine import machine_info

# Our trainer's DeepSpeed config per precision in the benchmarks that compare with the HF Trainer (which gets
# `bf16=True` for "bf16": autocast over fp32 weights, where DeepSpeed keeps bf16 weights and fp32 masters).
DEEPSPEED_CONFIG = {"fp32": "configs/deepspeed/cpu.json", "bf16": "configs/deepspeed/zero0_bf16.json"}


def refuse(message: str) -> NoReturn:
    """Stop on bad input before any work: the one-line reason and its fix on stderr, exit status 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def offline_environment() -> None:
    """No network and the CPU accelerator for this process and those it starts, where the caller did not say."""
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
                       "DS_ACCELERATOR": "cpu"}.items():
        os.environ.setdefault(key, value)


def median_range(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def range_text(r: dict[str, float], digits: int = 3) -> str:
    """A `median_range` as "median (min-max)", with " CI lo-hi" where it carries a `median_ci95`."""
    text = f"{r['median']:.{digits}f} ({r['min']:.{digits}f}-{r['max']:.{digits}f})"
    if "median_ci95" in r:
        text += " CI {:.{d}f}-{:.{d}f}".format(*r["median_ci95"], d=digits)
    return text


def median_ci95(values: list[float], resamples: int = 4000, seed: int = 0) -> list[float]:
    """A 95% bootstrap interval of the median: a threshold outside it is a conclusion, one inside is not."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return [medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]]


def alternate(variants: dict[str, Callable[[], None]], rounds: int, warmup: int = 2) -> dict[str, dict]:
    """Median, min and max seconds per call of each variant, calling them in turn so drift hits all alike (odd
    rounds in reverse order, so none always runs first); "runs" keeps every round's seconds, in order, for ratios
    paired within a round."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants.items())
    for round_ in range(rounds):
        for name, fn in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: median_range(v) | {"runs": v} for k, v in times.items()}


def paired(spread: dict[str, dict], numerator: str, denominator: str, scale: float = 1.0) -> dict[str, float]:
    """Median, min and max over rounds of one variant's seconds over another's in the same round (times `scale`):
    the machine's slow swings (this one's can be 30%) hit both sides of a round alike; with the median's 95%
    bootstrap interval."""
    ratios = [n / d * scale for n, d in zip(spread[numerator]["runs"], spread[denominator]["runs"])]
    return ratio_summary(ratios)


def ratio_summary(ratios: list[float]) -> dict[str, Any]:
    """Median, min-max and the median's 95% bootstrap interval of per-round ratios."""
    return median_range(ratios) | {"median_ci95": median_ci95(ratios)}


def round_speedups(times: dict[Hashable, list[float]], slow: Hashable, fast: Hashable) -> dict[str, Any]:
    """How many times faster `fast` ran than `slow` in each round of `alternate_runs` (their seconds in that
    round, divided), summarized; "rounds" keeps the ratios in order."""
    ratios = [s / f for s, f in zip(times[slow], times[fast], strict=True)]
    return ratio_summary(ratios) | {"rounds": ratios}


def earlier_rounds(paths: list[str], settings: dict[str, Any], key: tuple[str, ...]) -> dict[str, list[float]]:
    """The per-round ratios under `key` in each earlier results JSON of a benchmark, for `--pool`; exits on a
    file that is missing, is not such a JSON, or ran other `settings` (named as the benchmark's options)."""
    rounds = {}
    for path in paths:
        try:
            earlier = json.loads(Path(path).read_text())
            ratios = functools.reduce(lambda node, k: node[k], key, earlier)
        except (OSError, ValueError, KeyError, TypeError) as error:
            refuse(f"--pool {path}: not a results JSON of this benchmark with per-round ratios ({error}): "
                   "pass files this script wrote")
        if any(earlier.get(k) != v for k, v in settings.items()):
            def options(values) -> str:
                return " ".join(f"--{k.replace('_', '-')} {values.get(k)}" for k in settings)
            refuse(f"--pool {path}: ran {options(earlier)}, this run {options(settings)}: pool runs of the same "
                   "settings")
        rounds[path] = ratios
    return rounds


def pooled(earlier: dict[str, list[float]], this_run: list[float], out: str) -> dict[str, Any]:
    """This run's per-round ratios with the earlier runs' (`earlier_rounds`): median, min-max, the median's
    interval, and the files they came from."""
    ratios = [r for rounds in earlier.values() for r in rounds] + list(this_run)
    summary = ratio_summary(ratios) | {"rounds": len(ratios), "files": [*earlier, out]}
    print(f"\nper round, pooled over {len(earlier) + 1} runs ({len(ratios)} rounds): {range_text(summary)}")
    return summary


def alternate_runs(variants: dict[Hashable, Callable[[Path], float]], repeats: int, folder: Path,
                   prefix: str = "run") -> dict[Hashable, list[float]]:
    """Seconds each variant reports for a whole run, the variants taking turns for `repeats` rounds after a
    dropped warm-up round; each round starts one variant later, so none always runs first; each run gets a
    fresh output folder under `folder`."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = variants[name](folder / f"{prefix}-{round_}-{names.index(name)}")
            if round_:
                times[name].append(seconds)
    return times


def in_fresh_process(fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> Any:
    """`fn(*args)` run in a newly spawned Python process, its result returned: what one run sets in its process
    (allocator state, thread pools, caches) never reaches the next, whichever trainer it is. `env`: the
    environment variables that process starts with beyond this one's (this process's own are left as they were)."""
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        pool = multiprocessing.get_context("spawn").Pool(1)  # the process starts here, with the environment above
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    try:
        return pool.apply(fn, args)
    finally:  # close and join, not terminate: the run's process exits normally and cleans up after itself
        pool.close()
        pool.join()


class Turns:
    """One side of two processes taking turns (`in_turns`): `take` waits for this side's turn, `hand_over` ends
    it, keeping its seconds, and gives the turn to the other side."""

    def __init__(self, mine, theirs, ready, timeout_s: float):
        self.mine, self.theirs, self.ready, self.timeout_s = mine, theirs, ready, timeout_s
        self.started: float | None = None
        self.seconds: list[float] = []

    def take(self) -> None:
        if self.started is None:  # both sides set up before either's first turn: no turn runs beside a set-up
            self.ready.wait(self.timeout_s)
        if not self.mine.acquire(timeout=self.timeout_s):
            raise RuntimeError(f"the other side did not hand over its turn within {self.timeout_s:.0f} s")
        self.started = time.perf_counter()

    def hand_over(self) -> None:
        self.seconds.append(time.perf_counter() - self.started)
        self.theirs.release()


def trainer_steps_in_turns(turns: Turns) -> None:
    """Make every `earlybert` Trainer in this (spawned) process a side of `in_turns`: a turn runs from the start
    of one step to the start of the next (the step, its metrics line, any checkpoint), the last to the final save."""
    from earlybert.train.trainer import Trainer

    train_step, finish = Trainer._train_step, Trainer._finish

    def step_in_turn(self):
        if turns.started is not None:
            turns.hand_over()
        turns.take()
        return train_step(self)

    def finish_after_turn(self):
        turns.hand_over()
        return finish(self)

    Trainer._train_step, Trainer._finish = step_in_turn, finish_after_turn


def kept_turns(turns_s: list[float]) -> list[float]:
    """Turns 3 to N-1 of a side of `in_turns` over N steps: after the warm-up, before the last step's save."""
    return turns_s[2:-1]


def _take_turns(name: str, job: Callable[[Turns], Any], turns: Turns, results) -> None:
    results.put((name, job(turns)))


def in_turns(jobs: dict[str, Callable[[Turns], Any]], first: str, timeout_s: float = 1800.0) -> dict[str, Any]:
    """The results of two jobs run side by side, each in a newly spawned process, taking turns through the
    `Turns` each is given: while one works between `take` and `hand_over` the other waits, blocked, using no
    CPU. Paired turns are seconds apart, so a machine's slow swings hit both sides alike. `first` has the first
    turn; a job that fails stops both."""
    ctx = multiprocessing.get_context("spawn")
    semaphores = {name: ctx.Semaphore(1 if name == first else 0) for name in jobs}
    ready, results = ctx.Barrier(len(jobs), timeout=timeout_s), ctx.Queue()
    (a, b) = jobs
    sides = {a: Turns(semaphores[a], semaphores[b], ready, timeout_s),
             b: Turns(semaphores[b], semaphores[a], ready, timeout_s)}
    processes = [ctx.Process(target=_take_turns, args=(name, job, sides[name], results)) for name, job in jobs.items()]
    for process in processes:
        process.start()
    out: dict[str, Any] = {}
    try:
        while len(out) < len(jobs):
            try:
                name, result = results.get(timeout=1.0)
                out[name] = result
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError("a side of the turn-taking failed: "
                                       f"exit codes {[p.exitcode for p in processes]}") from None
    finally:
        for process in processes:
            if out.keys() != jobs.keys():
                process.terminate()
            process.join()
    return out


def cpu_record() -> dict[str, str]:
    """The CPU a measurement ran on, from /proc/cpuinfo (Linux): name, x86 family/model (Zen 3 and Zen 4 EPYCs
    share a name) and the flags that decide matmul speed; empty elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"cpu": fields.get("model name", ""),
            "cpu_family_model": f"{fields.get('cpu family', '')}/{fields.get('model', '')}".strip("/"),
            "cpu_features": " ".join(f for f in fields.get("flags", "").split() if f in wanted)}


def write_json(path: str | Path, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"machine": {**machine_info(), **cpu_record()}, **data}, indent=1))


def print_table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
