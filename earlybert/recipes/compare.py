"""`earlybert compare`: one fine-tuning config run as full / earlybert / random over seeds (and prune ratios).

    earlybert compare --config configs/finetune/bbc-topic.yaml model=DIR data_dir=DIR \
        compare.output_dir=runs/compare compare.seeds=[1,2,3] "compare.ratios=[[0.333,0.4],[0.5,0.6]]"

Keys under `compare.` set the comparison; every other key overrides the fine-tuning config of every run.
Runs go one after another, modes interleaved within each seed so machine drift hits all alike, in an order
rotated from seed to seed so that no mode always runs first; a short untimed warm-up run goes before them. A
random ticket keeps the learned ticket's heads per layer and total FFN width (same seed and ratios), so the two
train models of one size. A run that already finished is skipped, so a killed comparison resumes by running the
same command again.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from earlybert.config import Choice, Range, check_config, config_from_cli, help_text, load_config, split_cli
from earlybert.errors import EarlyBertError
from earlybert.recipes.finetune import MODES, FinetuneConfig

METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "exact_match")


@dataclass
class CompareConfig:
    """A comparison of training modes over seeds."""

    output_dir: str = "runs/compare"
    """Folder for the runs (MODE[-hH-fF]/seedN), comparison.json, comparison.md and comparison.png."""
    modes: Annotated[list[str], Choice(MODES)] = field(default_factory=lambda: ["full", "earlybert", "random"])
    """Modes to run: full, earlybert, random (slim needs a slim model)."""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """Seeds; every mode runs once per seed."""
    ratios: list[list[float]] = field(default_factory=list)
    """[heads_ratio, ffn_ratio] pairs for earlybert and random; empty: the fine-tuning config's."""
    weights: Annotated[list[str], Choice(("rewind", "continue"))] = field(default_factory=list)
    """search.weights values for earlybert (rewind, continue); empty: the fine-tuning config's."""
    metric: Annotated[str, Choice(("", *METRICS))] = ""
    """Dev metric to compare; empty: the first of accuracy, f1, matthews_correlation, pearson, exact_match."""
    warmup_steps: Annotated[int, Range(0)] = 10
    """Steps of an untimed full-model run before the first timed one (imports, caches); 0: none."""

    def __post_init__(self):
        check_plan(self.modes, self.seeds, self.ratios, MODES)


def check_plan(modes: list[str], seeds: list[int], ratios: list[list[float]], known: tuple[str, ...]) -> None:
    """Refuse an empty mode or seed list, a repeated seed and a ratio entry that is not a pair."""
    if not modes:
        raise EarlyBertError(f"compare.modes is empty: use some of {', '.join(known)}")
    if not seeds:
        raise EarlyBertError("compare.seeds is empty: give at least one seed, e.g. compare.seeds=[1,2,3]")
    if len(set(seeds)) != len(seeds):
        raise EarlyBertError(f"compare.seeds={seeds} repeats a seed: give distinct seeds")
    for pair in ratios:
        if len(pair) != 2:
            raise EarlyBertError(f"compare.ratios entry {pair} is not [heads_ratio, ffn_ratio]")


@dataclass(frozen=True)
class Variant:
    """A mode at prune ratios and, for earlybert, weights after the draw (None: the config's)."""

    mode: str
    ratios: tuple[float, float] | None = None
    weights: str | None = None

    @property
    def name(self) -> str:
        name = self.mode if self.weights is None else f"{self.mode}-{self.weights}"
        return name if self.ratios is None else f"{name}-h{self.ratios[0]:.3g}-f{self.ratios[1]:.3g}"


def variants(cmp: CompareConfig, default_weights: str = "rewind") -> list[Variant]:
    """The variants as listed: full once, searched ones at each weights and ratio pair, random ones at each pair.

    Searched variants at the config's own weights keep the plain name, so adding weights reuses finished runs.
    """
    pairs = [tuple(p) for p in cmp.ratios] or [None]
    out = []
    for mode in cmp.modes:
        if mode in ("full", "slim"):
            out.append(Variant(mode))
        else:
            weights = cmp.weights if mode == "earlybert" and cmp.weights else [None]
            out += [Variant(mode, p, None if w == default_weights else w) for w in weights for p in pairs]
    return out


def ticket_source(variant: Variant, chosen: list[Variant]) -> Variant | None:
    """The earlybert variant at the same ratios whose ticket a random variant copies the sizes of (None: none)."""
    if variant.mode != "random":
        return None
    return next((v for v in chosen if v.mode == "earlybert" and v.ratios == variant.ratios), None)


def run_order(chosen: list[Variant], seeds: list[int]) -> list[tuple[Variant, int]]:
    """(variant, seed) in run order: each seed's variants rotated one place further than the last seed's; a random
    variant runs right after the earlybert run whose ticket it copies (the two rotate as one)."""
    units = [[v, *(r for r in chosen if ticket_source(r, chosen) == v)] for v in chosen
             if ticket_source(v, chosen) is None]
    order = []
    for k, seed in enumerate(seeds):
        shift = k % len(units)
        order += [(v, seed) for unit in units[shift:] + units[:shift] for v in unit]
    return order


def run_config(path: str | None, overrides: list[str], variant: Variant, seed: int, folder: Path,
               random_like: Path | None = None) -> FinetuneConfig:
    """The fine-tuning config of one run."""
    extra = [f"mode={variant.mode}", f"seed={seed}", f"output_dir={folder}", "log.progress_bar=false"]
    if random_like is not None:
        extra.append(f"random_like={random_like}")
    if variant.ratios is not None:
        extra += [f"search.heads_ratio={variant.ratios[0]}", f"search.ffn_ratio={variant.ratios[1]}"]
    if variant.weights is not None:
        extra.append(f"search.weights={variant.weights}")
    return load_config(FinetuneConfig, path, [*overrides, *extra])


def check_inputs(cfg: FinetuneConfig) -> None:
    """Refuse a comparison whose model or task data is missing, before any folder is made."""
    if not cfg.model or not (Path(cfg.model) / "config.json").is_file():
        raise EarlyBertError(f"model={cfg.model!r} is not a model folder (no config.json): set model=FOLDER")
    if not cfg.data_dir:
        return  # the Hub: checked by the first run
    data = Path(cfg.data_dir)
    if cfg.task in ("squad", "squad_v2"):
        version = "v2.0" if cfg.task == "squad_v2" else "v1.1"
        needed = [data / f"train-{version}.json", data / f"dev-{version}.json"]
    else:
        needed = [data]
    missing = [str(p) for p in needed if not p.exists()]
    if missing or not any(data.iterdir()):
        raise EarlyBertError(f"task data {missing[0] if missing else data} is missing: set data_dir to the task's "
                             "folder (GLUE layout TSVs, or SQuAD JSON)")


def finished(folder: Path) -> dict | None:
    """The summary of a finished run in `folder`, else None."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if "eval" in summary else None


def run_one(cfg: FinetuneConfig) -> dict:
    """Fine-tune one run in this process (an unfinished folder is started over)."""
    from earlybert.recipes import finetune

    folder = Path(cfg.output_dir)
    if folder.exists():
        shutil.rmtree(folder)  # a killed run: its partial timings would not be comparable
    return finetune.run(cfg)


def record(variant: Variant, seed: int, summary: dict, metric: str) -> dict[str, Any]:
    """The numbers of one run that the comparison uses."""
    eval_ = summary["eval"]
    key = metric or next((m for m in METRICS if m in eval_), None)
    if key not in eval_:
        raise EarlyBertError(f"compare.metric={metric!r} is not among the run's metrics {sorted(eval_)}")
    return {"variant": variant.name, "mode": variant.mode, "ratios": variant.ratios, "weights": summary.get("weights"),
            "seed": seed,
            "metric": key, "value": eval_[key], "train_time_s": summary["train_time_s"],
            "time_s": summary["time_s"], "ticket_step": summary.get("ticket_step"),
            "drawn_by": summary.get("drawn_by"), "steps": summary["steps"],
            "params": summary["slim"]["params"], "flops_per_token": summary["slim"]["train_flops_per_token"],
            "ffn_kept": sum(summary["slim"]["layer_ffn"]), "heads_kept": sum(summary["slim"]["layer_heads"]),
            "draw_check": summary.get("draw_check")}


def aggregate(runs: list[dict]) -> list[dict[str, Any]]:
    """Mean and std per variant; time saved against the mean full run (search included)."""
    def stats(xs):
        return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    full_times = [r["train_time_s"] for r in runs if r["mode"] == "full"]
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == name]
        value, value_std = stats([r["value"] for r in group])
        time, time_std = stats([r["train_time_s"] for r in group])
        rows.append({"variant": name, "mode": group[0]["mode"], "ratios": group[0]["ratios"], "runs": len(group),
                     "metric": group[0]["metric"], "mean": value, "std": value_std, "train_time_s": time,
                     "train_time_std": time_std,
                     "time_saved": 1 - time / statistics.mean(full_times) if full_times else None,
                     "params": statistics.mean(r["params"] for r in group),
                     "flops_per_token": statistics.mean(r["flops_per_token"] for r in group),
                     "worst": min(r["value"] for r in group),
                     "collapse_warnings": sum(bool((r.get("draw_check") or {}).get("collapsed")) for r in group),
                     "not_judged": sum((r.get("draw_check") or {}).get("judged") is False for r in group)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The comparison as a markdown table."""
    metric = rows[0]["metric"]
    lines = [f"| variant | runs | {metric} mean | std | worst | train s (search incl.) | time saved vs full | "
             "params | train FLOPs/token | collapse warnings |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        saved = "-" if r["time_saved"] is None or r["mode"] == "full" else f"{100 * r['time_saved']:.1f}%"
        warned = "-" if r["mode"] != "earlybert" else f"{r['collapse_warnings']}/{r['runs']}" + (
            f" ({r['not_judged']} not judged)" if r.get("not_judged") else "")
        lines.append(f"| {r['variant']} | {r['runs']} | {100 * r['mean']:.2f} | {100 * r['std']:.2f} | "
                     f"{100 * r['worst']:.2f} | {r['train_time_s']:.1f} ± {r['train_time_std']:.1f} | {saved} | "
                     f"{r['params']:,.0f} | {r['flops_per_token']:,.0f} | {warned} |")
    return "\n".join(lines) + "\n"


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (time, metric) no other point beats on both (less time, higher metric), by time."""
    front, best = [], float("-inf")
    for t, v in sorted(points, key=lambda p: (p[0], -p[1])):
        if v > best:
            front.append((t, v))
            best = v
    return front


def plot(runs: list[dict], path: Path) -> None:
    """Dev metric against training time, one point per run, with the Pareto front."""
    plot_runs(runs, path, [100 * r["value"] for r in runs], f"dev {runs[0]['metric']} (%)")


def plot_runs(runs: list[dict], path: Path, values: list[float], label: str, lower_is_better: bool = False) -> None:
    """`values` (one per run) against each run's training time, a colour per variant, with the Pareto front."""
    from earlybert.report.html import _plt

    sign = -1 if lower_is_better else 1
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [(r["train_time_s"], v) for r, v in zip(runs, values) if r["variant"] == name]
        ax.scatter([t for t, _ in mine], [v for _, v in mine], label=name, s=30)
    front = pareto([(r["train_time_s"], sign * v) for r, v in zip(runs, values)])
    ax.step([t for t, _ in front], [sign * v for _, v in front], where="post", color="gray", lw=1, ls="--",
            label="Pareto front")
    ax.set_xlabel("training time, s (search included)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, cmp: CompareConfig, runs: list[dict]) -> list[dict]:
    """comparison.json, comparison.md and comparison.png (this module is their only writer)."""
    from earlybert.report.machine import machine_info

    rows = aggregate(runs)
    data = {"machine": machine_info(), "compare": vars(cmp), "rows": rows, "runs": runs}
    (out / "comparison.json").write_text(json.dumps(data, indent=1))
    (out / "comparison.md").write_text(markdown(rows))
    plot(runs, out / "comparison.png")
    return rows


def warm_up(cfg: FinetuneConfig, steps: int, folder: Path) -> None:
    """A short untimed full-model run (imports, tokenizer, data and kernels warm), then its folder is removed."""
    import dataclasses

    warm = dataclasses.replace(cfg, mode="full", output_dir=str(folder), epochs=0.0, baseline_dir="",
                               random_like="", train=dataclasses.replace(cfg.train, max_steps=steps, warmup_steps=0))
    run_untimed(run_one, warm, steps, folder)


def run_untimed(run_one, cfg, steps: int, folder: Path) -> None:
    """Run the warm-up config `cfg` with `run_one`, then remove its folder."""
    print(f"compare: warm-up ({steps} untimed steps)", flush=True)
    try:
        run_one(cfg)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(cmp: CompareConfig, path: str | None, overrides: list[str]) -> list[dict]:
    """Run (or finish) the comparison; returns the aggregated rows."""
    out = Path(cmp.output_dir)
    own = run_config(path, overrides, Variant("earlybert"), cmp.seeds[0], out).search.weights
    chosen = variants(cmp, "rewind" if own == "auto" else own)

    def config(variant: Variant, seed: int) -> FinetuneConfig:
        source = ticket_source(variant, chosen)
        like = out / source.name / f"seed{seed}" / "ticket.json" if source is not None else None
        return run_config(path, overrides, variant, seed, out / variant.name / f"seed{seed}", like)

    plan = [(v, s, config(v, s)) for v, s in run_order(chosen, cmp.seeds)]
    check_config(plan[0][2])
    check_inputs(plan[0][2])
    runs, warm = [], cmp.warmup_steps == 0
    for variant, seed, cfg in plan:
        summary = finished(Path(cfg.output_dir))
        if summary is None:
            if not warm:
                warm_up(cfg, cmp.warmup_steps, out / "warmup")
                warm = True
            print(f"compare: {variant.name} seed {seed}", flush=True)
            run_one(cfg)
            summary = finished(Path(cfg.output_dir))
        else:
            print(f"compare: {variant.name} seed {seed} already finished: skipped", flush=True)
        runs.append(record(variant, seed, summary, cmp.metric))
    rows = write_outputs(out, cmp, runs)
    print(markdown(rows))
    return rows


def is_pretraining(path: str | None, overrides: list[str]) -> bool:
    """Whether a config (YAML and overrides) is a pretraining one: it sets a key only pretraining has (data,
    phases), or a model section rather than a model folder."""
    import dataclasses

    import yaml

    from earlybert.recipes.pretrain import PretrainConfig

    raw = yaml.safe_load(Path(path).read_text()) if path and Path(path).is_file() else None
    raw = raw if isinstance(raw, dict) else {}
    only = {f.name for f in dataclasses.fields(PretrainConfig)} - {f.name for f in dataclasses.fields(FinetuneConfig)}
    keys = set(raw) | {o.split("=", 1)[0].split(".", 1)[0] for o in overrides}
    return bool(keys & only) or isinstance(raw.get("model"), dict) or any(o.startswith("model.") for o in overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `earlybert compare` (a fine-tuning or a pretraining config)."""
    from earlybert.recipes import compare_pretrain
    from earlybert.recipes.pretrain import PretrainConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if any(a in ("-h", "--help") for a in argv):
            print("usage: earlybert compare --config FINETUNE.yaml|PRETRAIN.yaml [key=value ...] "
                  "[compare.key=value ...]\n\ncompare keys, fine-tuning configs:\n" +
                  "\n".join(help_text(CompareConfig, "compare.")) + "\n\ncompare keys, pretraining configs:\n" +
                  "\n".join(help_text(compare_pretrain.PretrainCompareConfig, "compare.")) +
                  "\n\nevery other key: see `earlybert finetune glue --help` or `earlybert pretrain --help`")
            return 0
        compare_args = [a.removeprefix("compare.") for a in argv if a.startswith("compare.")]
        rest = [a for a in argv if not a.startswith("compare.")]
        path, overrides = split_cli(rest, "earlybert compare", FinetuneConfig)
        if is_pretraining(path, overrides):
            cmp = config_from_cli(compare_pretrain.PretrainCompareConfig, compare_args, "earlybert compare",
                                  prefix="compare.")
            load_config(PretrainConfig, path, overrides)  # unknown keys fail here, before any run
            compare_pretrain.run(cmp, path, overrides)
            return 0
        cmp = config_from_cli(CompareConfig, compare_args, "earlybert compare", prefix="compare.")
        load_config(FinetuneConfig, path, overrides)  # unknown keys fail here, before any run
        run(cmp, path, overrides)
    except EarlyBertError as e:
        print(f"earlybert compare: error: {e}", file=sys.stderr)
        return 2
    return 0
