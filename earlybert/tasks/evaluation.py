"""Evaluation: dev metrics, GLUE submission files, SQuAD predictions, and the `earlybert evaluate` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from earlybert.data.batches import trim_padding
from earlybert.errors import EarlyBertError
from earlybert.models.adapters import model_inputs
from earlybert.tasks import glue

SUBMISSION_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
                    "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "mnli": "MNLI", "custom": "custom"}


@torch.no_grad()
def predict_logits(model, inputs: dict[str, torch.Tensor], batch_size: int,
                   dynamic_padding: bool = True) -> list[np.ndarray]:
    """Model outputs over all rows, batched (each batch padded to its longest row unless `dynamic_padding` is
    off); a list of arrays (logits, or start and end logits, padded back to the inputs' width)."""
    model.eval()
    device = next(model.parameters()).device
    chunks: list[list[np.ndarray]] = []
    n, width = len(inputs["input_ids"]), inputs["input_ids"].shape[1]
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in inputs.items()}
        batch = {k: v.to(device) for k, v in (trim_padding(batch) if dynamic_padding else batch).items()}
        out = model(**model_inputs(model, batch))
        parts = [out.start_logits, out.end_logits] if hasattr(out, "start_logits") else [out.logits]
        # Per-token outputs (SQuAD) of trimmed columns are padding: filled back with -inf (never chosen).
        chunks.append([np.pad(p.float().cpu().numpy(), ((0, 0), (0, width - p.shape[1])), constant_values=-np.inf)
                       if p.ndim == 2 and hasattr(out, "start_logits") else p.float().cpu().numpy() for p in parts])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _glue_predictions(model, task, examples, tokenizer, cfg) -> np.ndarray:
    from earlybert.tasks.glue import glue_features

    inputs = glue_features(tokenizer, examples, cfg.max_seq_len, task.is_regression)
    inputs.pop("labels", None)
    (logits,) = predict_logits(model, inputs, cfg.eval_batch_size, cfg.dynamic_padding)
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def _write_predictions(path: Path, task, examples, preds, exact: bool = False) -> None:
    """index<TAB>prediction rows; `exact` keeps regression values unclipped and unrounded (dev scoring)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["index", "prediction"])
        for example, p in zip(examples, preds):
            value = repr(float(p)) if exact and task.is_regression else glue.label_name(task, p)
            writer.writerow([example.index, value])


def evaluate_run(cfg, kind: str, data, tokenizer, run_dir: Path, summary: dict, model_dir: Path | None = None) -> dict:
    """Score the trained model (run_dir/model, or `model_dir`) on dev, write eval_results.json and predictions;
    return the summary with them."""
    from earlybert.models.checkpoint import load_model
    from earlybert.tasks import squad

    model = load_model(model_dir or run_dir / "model")
    results: dict[str, float] = {}
    if kind == "glue":
        task = data.task
        for i, examples in enumerate(data.dev.values()):
            preds = _glue_predictions(model, task, examples, tokenizer, cfg)
            scores = glue.score(task, list(preds), [e.label for e in examples])
            suffix = "" if i == 0 else "_mm"  # MNLI: matched first, then mismatched
            results.update({f"{k}{suffix}": v for k, v in scores.items()})
            # The format `earlybert evaluate glue` reads (and the submission files use).
            _write_predictions(run_dir / f"dev{'' if i == 0 else '_mismatched'}_predictions.tsv", task, examples, preds,
                               exact=True)
        for split, examples in data.test.items():
            preds = _glue_predictions(model, task, examples, tokenizer, cfg)
            name = SUBMISSION_NAMES[task.name] + ({"test_matched": "-m", "test_mismatched": "-mm"}.get(split, ""))
            _write_predictions(run_dir / f"{name}.tsv", task, examples, preds)
    else:
        _, dev = data
        inputs, example_of, offsets = squad.eval_features(tokenizer, dev, cfg.max_seq_len, cfg.doc_stride)
        start, end = predict_logits(model, inputs, cfg.eval_batch_size, cfg.dynamic_padding)
        v2 = cfg.task == "squad_v2"
        preds, null_scores = squad.postprocess(dev, example_of, offsets, start, end, cfg.n_best, cfg.max_answer_len,
                                               version_2=v2)
        (run_dir / "predictions.json").write_text(json.dumps(preds, indent=1))
        golds = squad.gold_answers(dev)
        from earlybert.tasks.metrics import squad_v1, squad_v2

        results = squad_v2(golds, preds, null_scores) if v2 else squad_v1(golds, preds)
        if v2:
            (run_dir / "null_odds.json").write_text(json.dumps(null_scores, indent=1))
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    summary["eval"] = results
    summary["mode"] = cfg.mode
    summary["train_time_s"] = sum(summary["time_s"].values())
    if cfg.baseline_dir:  # checked before training: a finished fine-tuning run
        full = json.loads((Path(cfg.baseline_dir) / "summary.json").read_text())
        summary["baseline_train_time_s"] = full["train_time_s"]
        summary["time_saved"] = 1.0 - summary["train_time_s"] / full["train_time_s"]
        summary["baseline_eval"] = full.get("eval", {})
    return summary


def evaluate_squad_files(data: str, predictions: str, na_probs: str | None = None) -> dict[str, float]:
    """The official scripts' interface: gold SQuAD JSON + predictions JSON (id -> text)."""
    from earlybert.tasks import squad
    from earlybert.tasks.metrics import squad_v1, squad_v2

    if na_probs and not Path(na_probs).is_file():
        raise EarlyBertError(f"--na-prob-file {na_probs} does not exist: pass the null_odds.json a SQuAD v2.0 run "
                             "wrote, or leave it out")
    examples = squad.read_squad(data, check_offsets=False)  # scoring needs the answers' text only
    try:
        preds = json.loads(Path(predictions).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EarlyBertError(f"predictions file {predictions} is not readable JSON ({e})") from None
    golds = squad.gold_answers(examples)
    if any(not e.answers for e in examples):  # unanswerable questions: a v2.0 file
        probs = json.loads(Path(na_probs).read_text()) if na_probs else None
        return squad_v2(golds, preds, probs)
    return squad_v1(golds, preds)


def evaluate_glue_files(task_name: str, data_dir: str, predictions: str) -> dict[str, float]:
    """Score a dev-set prediction TSV (`index<TAB>prediction`, as the submission files) against data_dir's dev file."""
    task = glue.get_task(task_name)
    data = glue.load_local(task, data_dir)
    examples = next(iter(data.dev.values()))
    try:
        with open(predictions, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except OSError as e:
        raise EarlyBertError(f"predictions file {predictions} cannot be read ({e})") from None
    if not rows or not {"index", "prediction"} <= set(rows[0]):
        raise EarlyBertError(f"{predictions} needs the columns index and prediction (has: "
                             f"{', '.join(rows[0]) if rows else 'none'}): write index<TAB>prediction rows")
    by_index = {r["index"]: r["prediction"] for r in rows}
    preds = []
    for e in examples:
        if e.index not in by_index:
            raise EarlyBertError(f"{predictions} has no prediction for index {e.index}: predict every dev example")
        raw = by_index[e.index]
        if not task.is_regression and raw not in task.labels:
            raise EarlyBertError(f"{predictions} index {e.index}: prediction {raw!r} is not a {task.name} label "
                                 f"({', '.join(task.labels)}): write the labels as the submission files do")
        try:
            preds.append(float(raw) if task.is_regression else task.labels.index(raw))
        except ValueError:
            raise EarlyBertError(f"{predictions} index {e.index}: prediction {raw!r} is not a number: write "
                                 "the predicted score") from None
    return glue.score(task, preds, [e.label for e in examples])
