"""`earlybert report RUN_DIR`: report.html and PNGs for any pretraining or fine-tuning run folder."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from earlybert.errors import EarlyBertError


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def read_run(run_dir: Path) -> dict[str, Any]:
    """summary.json, metrics.jsonl and ticket.json of a run folder (a one-line error if it is not one)."""
    if not (run_dir / "summary.json").is_file() or not (run_dir / "metrics.jsonl").is_file():
        raise EarlyBertError(f"{run_dir} is not a finished run folder (no summary.json and metrics.jsonl): "
                             "pass the output_dir of a pretraining or fine-tuning run")
    try:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        ticket = json.loads((run_dir / "ticket.json").read_text()) if (run_dir / "ticket.json").is_file() else None
        summary = json.loads((run_dir / "summary.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EarlyBertError(f"{run_dir} holds a damaged run file ({e}): restore metrics.jsonl, summary.json and "
                             "ticket.json from the run, or rerun it") from None
    return {"summary": summary, "rows": rows, "ticket": ticket}


def plot_distances(rows: list[dict], ticket: dict, threshold: float, path: Path) -> None:
    """Mask distance vs step for heads and FFN, with the threshold and the step the ticket was drawn."""
    plt = _plt()
    checks = [r for r in rows if r.get("heads_distance") is not None]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([r["step"] for r in checks], [r["heads_distance"] for r in checks], "o-", ms=3, label="heads")
    ax.plot([r["step"] for r in checks], [r["ffn_distance"] for r in checks], "s-", ms=3, label="FFN neurons")
    ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold:g}")
    drawn = ticket.get("step")
    ax.axvline(drawn, color="crimson", lw=1.5,
               label=f"{'early bird fired' if ticket.get('fired') else 'drawn at the search limit'} (step {drawn})")
    ax.set(xlabel="step", ylabel="max normalized Hamming distance", title="Mask distance over the detector window")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_head_grid(ticket: dict, path: Path) -> None:
    """Layer x head grid: colour = |coefficient| at the draw, crossed cells = pruned heads."""
    plt = _plt()
    heads = ticket["heads"]
    coefs = (ticket.get("coefficients") or {}).get("heads")
    width = max(len(r) for r in heads)
    grid = np.full((len(heads), width), np.nan)
    for layer, row in enumerate(heads):
        grid[layer, : len(row)] = np.abs(coefs[layer]) if coefs else row
    fig, ax = plt.subplots(figsize=(max(5.5, 1.5 + 0.6 * width), max(3.0, 1.2 + 0.5 * len(heads))))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for layer, row in enumerate(heads):
        for h, keep in enumerate(row):
            if coefs:
                ax.text(h, layer, f"{abs(coefs[layer][h]):.3f}", ha="center", va="center", fontsize=7,
                        color="white")
            if not keep:
                ax.plot([h - 0.45, h + 0.45], [layer - 0.45, layer + 0.45], color="red", lw=1.5)
                ax.plot([h - 0.45, h + 0.45], [layer + 0.45, layer - 0.45], color="red", lw=1.5)
    ax.set(xlabel="head", ylabel="layer", title="Heads per layer (red cross: pruned)",
           xticks=range(width), yticks=range(len(heads)))
    fig.colorbar(image, ax=ax, label="|coefficient|" if coefs else "kept")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ffn_kept(ticket: dict, path: Path) -> None:
    """FFN neurons kept per layer against the layer's full width."""
    plt = _plt()
    full = [len(r) for r in ticket["ffn"]]
    kept = [sum(r) for r in ticket["ffn"]]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    layers = np.arange(len(full))
    ax.bar(layers, full, color="lightgray", label="full width")
    ax.bar(layers, kept, color="seagreen", label="kept")
    for x, k, f in zip(layers, kept, full):
        ax.text(x, k, f"{100 * k / max(f, 1):.0f}%", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="layer", ylabel="FFN neurons", title="FFN neurons kept per layer", xticks=layers)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(rows: list[dict], drawn_at: int | None, path: Path) -> None:
    """Training loss (and accuracy) per step, the stages shaded apart."""
    plt = _plt()
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, [r["loss"] for r in rows], lw=1, color="navy", label="loss")
    if len(rows) >= 10:
        k = max(5, len(rows) // 20)
        smooth = np.convolve([r["loss"] for r in rows], np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=2, color="orange", label=f"loss, mean of {k}")
    if drawn_at is not None:
        ax.axvspan(0, drawn_at, color="khaki", alpha=0.3, label="search")
        ax.axvline(drawn_at, color="crimson", lw=1.5, label=f"shrink (step {drawn_at})")
    ax.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def elapsed_seconds(rows: list[dict]) -> list[float]:
    """Cumulative training seconds at each logged step (tokens / tokens_per_s: compute only, no checkpoints)."""
    return list(np.cumsum([r["tokens"] / r["tokens_per_s"] for r in rows]))


def plot_loss_against_time(curves: dict[str, list[dict]], path: Path) -> None:
    """Training loss against wall-clock training time, one curve per run (smoothed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, rows in curves.items():
        k = max(1, min(10, len(rows) // 10))
        loss = np.convolve([r["loss"] for r in rows], np.ones(k) / k, mode="valid")
        ax.plot(elapsed_seconds(rows)[k - 1:], loss, lw=1.5, label=f"{name} ({len(rows)} steps)")
    ax.set(xlabel="training time, s (measured)", ylabel="training loss", title="Loss against training time")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def savings_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(quantity, full, slim) rows: params, FLOPs per token, heads, FFN neurons, step time."""
    full, slim = summary["full"], summary["slim"]
    rows = [("parameters", f"{full['params']:,}", f"{slim['params']:,}"),
            ("training FLOPs per token", f"{full['train_flops_per_token']:,}", f"{slim['train_flops_per_token']:,}"),
            ("attention heads", str(sum(full["layer_heads"])), str(sum(slim["layer_heads"]))),
            ("FFN neurons", str(sum(full["layer_ffn"])), str(sum(slim["layer_ffn"])))]
    steps = summary.get("step_time_s", {})
    if "full" in steps and "slim" in steps:
        rows.append(("seconds per step", f"{steps['full']:.3f}", f"{steps['slim']:.3f}"))
    elif "search" in steps and "slim" in steps:  # the full model measured with its coefficients on
        rows.append(("seconds per step (full: search stage, coefficients on)", f"{steps['search']:.3f}",
                     f"{steps['slim']:.3f}"))
    return rows


BASELINE_DIR = "full-baseline"  # a run's full-model baseline, when it has one beside it (the demo)
STYLE = ("body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}img{max-width:100%}")


def _write_html(path: Path, body: list[str]) -> Path:
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>EarlyBERT report</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return path


def write_comparison_report(folder: Path) -> Path:
    """report.html for an `earlybert compare` folder: its table and comparison.png."""
    data = json.loads((folder / "comparison.json").read_text())
    header, _, *lines = (folder / "comparison.md").read_text().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in [header, *lines]]
    table = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells[0]) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    machine = ", ".join(f"{k} {v}" for k, v in data.get("machine", {}).items())
    body = [f"<h1>EarlyBERT comparison: {html.escape(folder.name)}</h1>",
            f"<p>{len(data['runs'])} runs, seeds {data['compare']['seeds']}; measured on {html.escape(machine)}. "
            "Training time includes the search; time saved is against the mean full run.</p>",
            f"<table>{table}</table>", "<h2>Metric against training time</h2>",
            "<img src='comparison.png' alt='metric against training time'>"]
    return _write_html(folder / "report.html", body)


def write_report(run_dir: str | Path) -> Path:
    """Write the PNGs and report.html into the run folder (or a comparison folder); return the HTML path."""
    run_dir = Path(run_dir)
    if (run_dir / "comparison.json").is_file() and (run_dir / "comparison.md").is_file():
        return write_comparison_report(run_dir)
    run = read_run(run_dir)
    summary, rows, ticket = run["summary"], run["rows"], run["ticket"]
    figures = []
    drawn = summary.get("ticket_step")
    plot_loss(rows, drawn, run_dir / "loss.png")
    figures.append(("loss.png", "Training loss"))
    baseline = run_dir / BASELINE_DIR
    if (baseline / "metrics.jsonl").is_file():  # the demo's full model, trained for the same steps
        plot_loss_against_time({"EarlyBERT": rows, "full model": read_run(baseline)["rows"]},
                               run_dir / "loss_vs_time.png")
        figures.append(("loss_vs_time.png", "Loss against training time: EarlyBERT and the full model"))
    if ticket is not None:
        if any(r.get("heads_distance") is not None for r in rows):
            config = run_dir / "config.yaml"
            threshold = 0.1
            if config.is_file():
                import yaml

                threshold = (yaml.safe_load(config.read_text()) or {}).get("search", {}).get("threshold", 0.1)
            plot_distances(rows, ticket, threshold, run_dir / "mask_distance.png")
            figures.append(("mask_distance.png", "Early-bird detection"))
        plot_head_grid(ticket, run_dir / "heads.png")
        plot_ffn_kept(ticket, run_dir / "ffn_kept.png")
        figures += [("heads.png", "Heads kept"), ("ffn_kept.png", "FFN neurons kept")]
    table = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in savings_rows(summary))
    times = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.2f}</td><td>{summary.get('steps_in', {}).get(k, '')}</td>"
                    "</tr>" for k, v in summary.get("time_s", {}).items())
    evals = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in summary.get("eval", {}).items())
    head = (f"ticket drawn at step {drawn} ({'early bird fired' if summary.get('fired') else 'search limit'})"
            if drawn is not None else "no ticket in this run")
    body = [f"<h1>EarlyBERT run report: {html.escape(run_dir.name)}</h1>",
            f"<p>{summary.get('steps')} steps, {summary.get('tokens', 0):,} tokens; {head}.</p>",
            "<h2>Savings</h2><table><tr><th></th><th>full</th><th>slim</th></tr>" + table + "</table>",
            "<h2>Time per stage</h2><table><tr><th>stage</th><th>seconds</th><th>steps</th></tr>" + times + "</table>"]
    if evals:
        body.append("<h2>Evaluation</h2><table>" + evals + "</table>")
    body += [f"<h2>{t}</h2><img src='{name}' alt='{t}'>" for name, t in figures]
    return _write_html(run_dir / "report.html", body)
