"""GLUE tasks (and custom classification/regression): official local TSV layout or the Hub, labels, metrics."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from earlybert.errors import EarlyBertError
from earlybert.tasks import metrics as M

csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class GlueTask:
    """Where a task's text and labels live, and how it is scored."""

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] = ("0", "1")  # label strings in id order; () for regression
    hub_columns: tuple[str, ...] = ()
    dev_files: tuple[str, ...] = ("dev",)
    test_files: tuple[str, ...] = ("test",)
    header: tuple[str, ...] | None = None  # column names for files without a header row (CoLA)
    metrics: tuple[str, ...] = ("accuracy",)

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)


NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")
TASKS = {t.name: t for t in [
    GlueTask("cola", ("sentence",), "label", hub_columns=("sentence",), metrics=("matthews_correlation",),
             header=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", ("sentence",), "label", hub_columns=("sentence",)),
    GlueTask("mrpc", ("#1 String", "#2 String"), "Quality", hub_columns=("sentence1", "sentence2"),
             metrics=("accuracy", "f1")),
    GlueTask("qqp", ("question1", "question2"), "is_duplicate", hub_columns=("question1", "question2"),
             metrics=("accuracy", "f1")),
    GlueTask("stsb", ("sentence1", "sentence2"), "score", labels=(), hub_columns=("sentence1", "sentence2"),
             metrics=("pearson", "spearmanr")),
    GlueTask("mnli", ("sentence1", "sentence2"), "gold_label", labels=NLI3, hub_columns=("premise", "hypothesis"),
             dev_files=("dev_matched", "dev_mismatched"), test_files=("test_matched", "test_mismatched")),
    GlueTask("qnli", ("question", "sentence"), "label", labels=NLI2, hub_columns=("question", "sentence")),
    GlueTask("rte", ("sentence1", "sentence2"), "label", labels=NLI2, hub_columns=("sentence1", "sentence2")),
    GlueTask("wnli", ("sentence1", "sentence2"), "label", hub_columns=("sentence1", "sentence2")),
]}
HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched",
              "test": "test", "test_matched": "test_matched", "test_mismatched": "test_mismatched", "train": "train"}


@dataclass
class Example:
    texts: tuple[str, ...]
    label: float | int | None
    index: str


@dataclass
class GlueData:
    task: GlueTask
    train: list[Example]
    dev: dict[str, list[Example]]
    test: dict[str, list[Example]] = field(default_factory=dict)


def custom_task(text_columns: list[str], label_column: str, data_dir: str, num_labels: int,
                regression: bool) -> GlueTask:
    """A task from a folder of train/dev files; labels from labels.txt when present, else 0..num_labels-1."""
    if not text_columns:
        raise EarlyBertError("task=custom needs text_columns, e.g. text_columns=[sentence]")
    labels: tuple[str, ...] = ()
    if not regression:
        names = Path(data_dir) / "labels.txt"
        if names.is_file():
            labels = tuple(str(i) for i, line in enumerate(names.read_text().splitlines()) if line.strip())
        elif num_labels > 1:
            labels = tuple(str(i) for i in range(num_labels))
        else:
            raise EarlyBertError("task=custom needs num_labels (or a labels.txt in data_dir, or regression=true)")
    return GlueTask("custom", tuple(text_columns), label_column, labels=labels)


def get_task(name: str) -> GlueTask:
    """The GLUE task called `name`, or a one-line error listing them."""
    if name not in TASKS:
        raise EarlyBertError(f"unknown task {name!r}: use one of {', '.join(TASKS)}, or custom")
    return TASKS[name]


def _read_rows(path: Path, header: tuple[str, ...] | None) -> list[dict[str, str]]:
    try:
        return _parse_rows(path, header)
    except UnicodeDecodeError:
        raise EarlyBertError(f"{path} is not UTF-8 text: convert it to UTF-8") from None
    except (json.JSONDecodeError, AttributeError) as e:
        raise EarlyBertError(f"{path} is not a JSON list of objects or JSON lines ({e}): fix the file") from None


def _parse_rows(path: Path, header: tuple[str, ...] | None) -> list[dict[str, str]]:
    if path.suffix == ".json" or path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            text = f.read()
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                        if line.strip()]
        return [{k: str(v) for k, v in r.items()} for r in rows]
    delimiter = "," if path.suffix == ".csv" else "\t"
    quoting = csv.QUOTE_MINIMAL if path.suffix == ".csv" else csv.QUOTE_NONE  # GLUE TSVs hold bare quotes
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter, quoting=quoting))
    first = 1
    if header is None:
        if not rows:
            return []
        header, rows, first = tuple(rows[0]), rows[1:], 2
    for i, r in enumerate(rows):
        if r and len(r) != len(header):
            raise EarlyBertError(f"{path} line {i + first} has {len(r)} fields but the header has {len(header)}: "
                                 "fix the row (a stray tab or a missing column)")
    return [dict(zip(header, r)) for r in rows if r]


def _find(data_dir: Path, stem: str) -> Path | None:
    for ext in (".tsv", ".csv", ".json", ".jsonl"):
        if (data_dir / f"{stem}{ext}").is_file():
            return data_dir / f"{stem}{ext}"
    return None


def _examples(task: GlueTask, rows: list[dict[str, str]], path: Path, labelled: bool) -> list[Example]:
    if not rows:
        raise EarlyBertError(f"{path} holds no examples: give a non-empty file")
    for col in task.text_columns:
        if col not in rows[0] and not (task.header and col in task.header):
            raise EarlyBertError(f"{path} has no text column {col!r} (columns: {', '.join(rows[0])})")
    if labelled and task.label_column not in rows[0]:
        raise EarlyBertError(f"{path} has no label column {task.label_column!r} (columns: {', '.join(rows[0])}): "
                             "set label_column")
    out = []
    for i, row in enumerate(rows):
        label = _label(task, row[task.label_column], path, i) if labelled else None
        index = row.get("index", row.get("id", str(i)))
        out.append(Example(tuple(row.get(c, "") for c in task.text_columns), label, index))
    return out


def _label(task: GlueTask, raw: str, path: Path, row: int) -> float | int:
    if task.is_regression:
        try:
            return float(raw)
        except ValueError:
            raise EarlyBertError(f"{path} row {row + 1}: label {raw!r} is not a number") from None
    if raw in task.labels:
        return task.labels.index(raw)
    raise EarlyBertError(f"{path} row {row + 1}: label {raw!r} is out of range for task {task.name} "
                         f"(expected one of {', '.join(task.labels)}): fix the data or the task's labels")


def load_local(task: GlueTask, data_dir: str) -> GlueData:
    """A task from a local folder in the official GLUE layout (train.tsv, dev*.tsv, test*.tsv)."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise EarlyBertError(f"data_dir {folder} does not exist: point it at the task's GLUE folder")
    train_path = _find(folder, "train")
    if train_path is None:
        raise EarlyBertError(f"{folder} has no train.tsv (or .csv/.json): use the official GLUE layout")
    train = _examples(task, _read_rows(train_path, task.header), train_path, labelled=True)
    dev = {}
    for stem in task.dev_files:
        path = _find(folder, stem)
        if path is None:
            raise EarlyBertError(f"{folder} has no {stem}.tsv: use the official GLUE layout")
        dev[stem] = _examples(task, _read_rows(path, task.header), path, labelled=True)
    test = {}
    for stem in task.test_files:
        path = _find(folder, stem)
        if path is not None:  # test files have no labels and a header even for CoLA
            test[stem] = _examples(task, _read_rows(path, None), path, labelled=False)
    return GlueData(task, train, dev, test)


def load_hub(task: GlueTask) -> GlueData:
    """A task from the Hub (`nyu-mll/glue`)."""
    from earlybert.data.hub import load_hub_dataset

    def convert(split: str, labelled: bool) -> list[Example]:
        ds = load_hub_dataset("nyu-mll/glue", task.name, split=HUB_SPLITS[split],
                              hint="set data_dir to a local folder in the official GLUE layout")
        return [Example(tuple(r[c] for c in task.hub_columns), r["label"] if labelled else None, str(r["idx"]))
                for r in ds]

    return GlueData(task, convert("train", True), {s: convert(s, True) for s in task.dev_files},
                    {s: convert(s, False) for s in task.test_files})


METRIC_FUNCTIONS: dict[str, Callable] = {
    "accuracy": M.accuracy, "f1": M.f1_binary, "matthews_correlation": M.matthews_correlation,
    "pearson": M.pearson, "spearmanr": M.spearman,
}


def score(task: GlueTask, predictions: list, labels: list) -> dict[str, float]:
    """The task's official metrics."""
    return {name: float(METRIC_FUNCTIONS[name](predictions, labels)) for name in task.metrics}


def label_name(task: GlueTask, prediction: float | int) -> str:
    """A prediction as GLUE's submission files write it."""
    if task.is_regression:
        return f"{min(5.0, max(0.0, float(prediction))):.3f}"
    return task.labels[int(prediction)]


def glue_features(tokenizer, examples, max_len: int, regression: bool) -> dict[str, torch.Tensor]:
    """Tokenized inputs (and labels when the examples have them), padded to `max_len`."""
    columns = list(zip(*[e.texts for e in examples]))
    enc = tokenizer(*columns[:2], truncation=True, max_length=max_len, padding="max_length", return_tensors="pt")
    out = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if examples[0].label is not None:
        out["labels"] = torch.tensor([e.label for e in examples], dtype=torch.float if regression else torch.long)
    return out
