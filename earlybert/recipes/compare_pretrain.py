"""`earlybert compare` for a pretraining config: full / earlybert / random / one-shot tickets at equal steps.

    earlybert compare --config configs/pretrain/smollm2-135m.yaml data.train_files=[FILE] train.max_steps=300 \
        compare.heldout=HELD_OUT.txt "compare.modes=[full,earlybert,random,wanda]" compare.seeds=[1,2]

Every run is `earlybert pretrain` with the one config at the same steps: full (no search), earlybert (the config's
search, draw, shrink, slim training), random (a random ticket of the learned ticket's sizes, trained from step 0)
and one-shot tickets (magnitude, wanda, flap: scored at step 0 on blocks of the first training file, at the
config's ratios). Runs go in the fine-tuning comparison's rotated order, after an untimed warm-up. The table gives
the final training loss, held-out perplexity (causal LMs, with compare.heldout), training time and time saved
against the full runs (the search included; a step-0 ticket's own seconds apart), params and FLOPs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from earlybert.config import Choice, PathKind, Range, check_config, load_config
from earlybert.errors import EarlyBertError
from earlybert.recipes.compare import Variant, check_plan, plot_runs, run_order, run_untimed, ticket_source
from earlybert.recipes.pretrain import PretrainConfig
from earlybert.ticket.oneshot import METHODS

PRETRAIN_MODES = ("full", "earlybert", "random", *METHODS)
LAST_LOSSES = 10  # the final training loss is the mean of the last logged losses


@dataclass
class PretrainCompareConfig:
    """A comparison of pretraining modes at equal steps over seeds."""

    output_dir: str = "runs/compare"
    """Folder for the runs (MODE[-hH-fF]/seedN), step-0 tickets (tickets/), comparison.json, .md and .png."""
    modes: Annotated[list[str], Choice(PRETRAIN_MODES)] = field(
        default_factory=lambda: ["full", "earlybert", "random"])
    """Modes to run: full, earlybert, random, and one-shot tickets (magnitude, wanda, flap)."""
    seeds: list[int] = field(default_factory=lambda: [1])
    """Seeds; every mode runs once per seed."""
    ratios: list[list[float]] = field(default_factory=list)
    """[heads_ratio, ffn_ratio] pairs for every ticket; empty: the config's search ratios."""
    heldout: Annotated[str, PathKind("file")] = ""
    """Held-out text file for each final model's perplexity (causal LMs); empty: training loss only."""
    heldout_blocks: Annotated[int, Range(1)] = 100
    """Blocks of data.seq_len tokens read from the held-out file."""
    calibration_blocks: Annotated[int, Range(1)] = 32
    """Blocks of the first training file that wanda and flap score activations on."""
    warmup_steps: Annotated[int, Range(0)] = 5
    """Steps of an untimed full run before the first timed one (imports, caches); 0: none."""

    def __post_init__(self):
        check_plan(self.modes, self.seeds, self.ratios, PRETRAIN_MODES)


def chosen_variants(cmp: PretrainCompareConfig) -> list[Variant]:
    """Full once; every other mode at each ratio pair (None: the config's)."""
    pairs = [tuple(p) for p in cmp.ratios] or [None]
    return [v for mode in cmp.modes for v in ([Variant(mode)] if mode == "full" else [Variant(mode, p) for p in pairs])]


def run_config(path: str | None, overrides: list[str], variant: Variant, seed: int, folder: Path,
               ticket: Path | None = None) -> PretrainConfig:
    """The pretraining config of one run (distillation only where a search draws the teacher)."""
    extra = [f"seed={seed}", f"output_dir={folder}", "log.progress_bar=false"]
    if variant.ratios is not None:
        extra += [f"search.heads_ratio={variant.ratios[0]}", f"search.ffn_ratio={variant.ratios[1]}"]
    if variant.mode == "earlybert":
        extra += ["search.enabled=true", "search.ticket="]
    else:
        extra += ["search.enabled=false", f"search.ticket={ticket or ''}", "distill.alpha=0"]
    return load_config(PretrainConfig, path, [*overrides, *extra])


def check_inputs(cmp: PretrainCompareConfig, cfg: PretrainConfig) -> None:
    """Refuse a comparison that could not finish, before any folder is made."""
    from earlybert.models.adapters import adapter_for_type

    check_config(cfg)
    check_config(cmp, prefix="compare.")
    oneshot = [m for m in cmp.modes if m in METHODS]
    if oneshot and not cfg.model.init_from:
        raise EarlyBertError(f"compare.modes {oneshot} score a pretrained model's weights: set model.init_from "
                             "(or drop them from compare.modes)")
    if oneshot and not cfg.data.files():
        raise EarlyBertError(f"compare.modes {oneshot} calibrate on text: set data.train_files")
    decoder = adapter_for_type(cfg.model.model_type().removeprefix("slim_")).decoder
    if cmp.heldout and not decoder:
        raise EarlyBertError("compare.heldout scores a causal LM's perplexity, and this config pretrains an encoder: "
                             "leave compare.heldout empty")


def step0_model(cfg: PretrainConfig, folder: Path):
    """(model, tokenizer) as the run would start: the pretrained one, or a fresh one from the config and seed."""
    from earlybert.recipes.pretrain import build_model, get_tokenizer, objective_task

    family = cfg.model.model_type().removeprefix("slim_")
    tokenizer = get_tokenizer(cfg, folder)
    return build_model(cfg, tokenizer, objective_task(cfg, family), family), tokenizer


def step0_ticket(cmp: PretrainCompareConfig, cfg: PretrainConfig, variant: Variant, seed: int, path: Path,
                 learned: Path | None) -> float:
    """Write the random or one-shot ticket of a run to `path` unless it is there; returns the seconds it took."""
    from earlybert.tasks.language_model import heldout_blocks
    from earlybert.ticket.masks import random_ticket
    from earlybert.ticket.oneshot import oneshot_ticket
    from earlybert.ticket.ticket import Ticket

    if path.is_file():
        return Ticket.load(path).metadata.get("draw_seconds", 0.0)
    started = time.perf_counter()
    model, tokenizer = step0_model(cfg, path.parent)
    spec = cfg.search.spec()
    if variant.mode == "random":
        # The learned ticket's sizes where the FFN is ranked across layers; per layer the ratios already give them.
        like = Ticket.load(learned) if learned is not None and cfg.search.ffn_scope == "global" else None
        ticket = random_ticket(model, spec, seed, like)
    else:
        blocks = None
        if variant.mode != "magnitude":
            ids = heldout_blocks(cfg.data.files()[0], tokenizer, cfg.data.seq_len, cmp.calibration_blocks)
            blocks = [{"input_ids": x, "attention_mask": x.new_ones(x.shape)} for x in ids.split(8)]
        ticket = oneshot_ticket(model, variant.mode, spec, blocks)
    ticket.metadata["draw_seconds"] = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    ticket.save(path)
    return ticket.metadata["draw_seconds"]


def finished(folder: Path) -> dict | None:
    """The summary of a finished pretraining run in `folder`, else None."""
    path = folder / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_one(cfg: PretrainConfig) -> dict:
    """Pretrain one run in this process (an unfinished folder is started over: its timings would not compare)."""
    from earlybert.recipes import pretrain

    if Path(cfg.output_dir).exists():
        shutil.rmtree(cfg.output_dir)
    return pretrain.run(cfg)


def record(cmp: PretrainCompareConfig, cfg: PretrainConfig, variant: Variant, seed: int, summary: dict,
           ticket_s: float) -> dict[str, Any]:
    """The numbers of one run that the comparison uses (held-out perplexity computed here)."""
    from earlybert.tasks.language_model import evaluate_lm_file

    folder = Path(cfg.output_dir)
    losses = [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    heldout = (evaluate_lm_file(str(folder / "model"), cmp.heldout, cfg.data.seq_len, cmp.heldout_blocks)
               if cmp.heldout else None)
    return {"variant": variant.name, "mode": variant.mode, "ratios": variant.ratios, "seed": seed,
            "final_loss": statistics.mean(losses[-LAST_LOSSES:]),
            "heldout_perplexity": heldout["perplexity"] if heldout else None,
            "heldout_loss": heldout["loss"] if heldout else None,
            "train_time_s": sum(summary["time_s"].values()), "ticket_s": ticket_s,
            "ticket_step": summary.get("ticket_step"), "drawn_by": summary.get("drawn_by"), "steps": summary["steps"],
            "params": summary["slim"]["params"], "flops_per_token": summary["slim"]["train_flops_per_token"]}


def aggregate(runs: list[dict]) -> list[dict[str, Any]]:
    """Mean and std per variant; time saved against the mean full run (search included, step-0 tickets apart)."""
    def stats(xs):
        xs = [x for x in xs if x is not None]
        return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (None, None)

    full = [r["train_time_s"] for r in runs if r["mode"] == "full"]
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == name]
        (loss, loss_std), (ppl, ppl_std) = stats(r["final_loss"] for r in group), stats(
            r["heldout_perplexity"] for r in group)
        time_s, time_std = stats(r["train_time_s"] for r in group)
        rows.append({"variant": name, "mode": group[0]["mode"], "ratios": group[0]["ratios"], "runs": len(group),
                     "final_loss": loss, "final_loss_std": loss_std, "perplexity": ppl, "perplexity_std": ppl_std,
                     "train_time_s": time_s, "train_time_std": time_std,
                     "time_saved": 1 - time_s / statistics.mean(full) if full else None,
                     "ticket_s": statistics.mean(r["ticket_s"] for r in group),
                     "ticket_steps": [r["ticket_step"] for r in group],
                     "params": statistics.mean(r["params"] for r in group),
                     "flops_per_token": statistics.mean(r["flops_per_token"] for r in group)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The comparison as a markdown table."""
    lines = ["| variant | runs | held-out perplexity | final train loss | train s (search incl.) | time saved vs full "
             "| step-0 ticket s | drawn at step | params | train FLOPs/token |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ppl = "-" if r["perplexity"] is None else f"{r['perplexity']:.2f} ± {r['perplexity_std']:.2f}"
        saved = "-" if r["time_saved"] is None or r["mode"] == "full" else f"{100 * r['time_saved']:.1f}%"
        drawn = ", ".join(str(s) for s in r["ticket_steps"] if s) or "-"
        lines.append(f"| {r['variant']} | {r['runs']} | {ppl} | {r['final_loss']:.3f} ± {r['final_loss_std']:.3f} | "
                     f"{r['train_time_s']:.1f} ± {r['train_time_std']:.1f} | {saved} | {r['ticket_s']:.1f} | "
                     f"{drawn} | {r['params']:,.0f} | {r['flops_per_token']:,.0f} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    """Held-out perplexity (else the final training loss) against training time, with the Pareto front."""
    key, label = (("heldout_perplexity", "held-out perplexity") if runs[0]["heldout_perplexity"] is not None else
                  ("final_loss", "final training loss"))
    plot_runs(runs, path, [r[key] for r in runs], label, lower_is_better=True)


def write_outputs(out: Path, cmp: PretrainCompareConfig, runs: list[dict]) -> list[dict]:
    """comparison.json, comparison.md and comparison.png (this module is their only writer for pretraining)."""
    from earlybert.report.machine import machine_info

    rows = aggregate(runs)
    data = {"machine": machine_info(), "compare": vars(cmp), "kind": "pretraining", "rows": rows, "runs": runs}
    (out / "comparison.json").write_text(json.dumps(data, indent=1))
    (out / "comparison.md").write_text(markdown(rows))
    plot(runs, out / "comparison.png")
    return rows


def warm_up(cfg: PretrainConfig, steps: int, folder: Path) -> None:
    """A short untimed full run (imports, tokenizer, data and kernels warm), then its folder is removed."""
    warm = dataclasses.replace(cfg, output_dir=str(folder), phases=[],
                               train=dataclasses.replace(cfg.train, max_steps=steps, warmup_steps=0),
                               checkpoint=dataclasses.replace(cfg.checkpoint, every=steps))
    run_untimed(run_one, warm, steps, folder)


def run(cmp: PretrainCompareConfig, path: str | None, overrides: list[str]) -> list[dict]:
    """Run (or finish) the comparison of a pretraining config; returns the aggregated rows."""
    out = Path(cmp.output_dir)
    chosen = chosen_variants(cmp)

    def ticket_path(variant: Variant, seed: int) -> Path | None:
        step0 = variant.mode not in ("full", "earlybert")
        return out / "tickets" / f"{variant.name}-seed{seed}.json" if step0 else None

    plan = [(v, s, run_config(path, overrides, v, s, out / v.name / f"seed{s}", ticket_path(v, s)))
            for v, s in run_order(chosen, cmp.seeds)]
    check_inputs(cmp, run_config(path, overrides, Variant("full"), cmp.seeds[0], out / "full"))
    runs, warm = [], cmp.warmup_steps == 0
    for variant, seed, cfg in plan:
        ticket_s, summary = 0.0, finished(Path(cfg.output_dir))
        if cfg.search.ticket:
            source = ticket_source(variant, chosen)
            learned = out / source.name / f"seed{seed}" / "ticket.json" if source is not None else None
            ticket_s = step0_ticket(cmp, cfg, variant, seed, Path(cfg.search.ticket), learned)
        if summary is None:
            if not warm:
                warm_up(run_config(path, overrides, Variant("full"), seed, out), cmp.warmup_steps, out / "warmup")
                warm = True
            print(f"compare: {variant.name} seed {seed}", flush=True)
            summary = run_one(cfg)
        else:
            print(f"compare: {variant.name} seed {seed} already finished: skipped", flush=True)
        runs.append(record(cmp, cfg, variant, seed, summary, ticket_s))
    rows = write_outputs(out, cmp, runs)
    print(markdown(rows))
    return rows
