"""Small GLUE-layout and SQuAD-format fixtures, and a tiny BERT folder with a tokenizer, for fine-tuning tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("the cat dog sat on mat a bird flew over house river ran fast slow happy sad good bad film movie "
         "plot actor great terrible city night day rain sun tree green red blue small large old new").split()


def sentence(rng: random.Random, n: int = 7) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _write(path: Path, header: list[str] | None, rows: list[list]) -> None:
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


LAYOUTS = {  # task: (train/dev header or None, test header, labels)
    "cola": (None, ["index", "sentence"], ["0", "1"]),
    "sst2": (["sentence", "label"], ["index", "sentence"], ["0", "1"]),
    "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["0", "1"]),
    "qqp": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"],
            ["0", "1"]),
    "stsb": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"], ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                         "sentence2"], None),
    "mnli": (["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"],
             ["index", "promptID", "pairID", "genre", "sentence1", "sentence2"],
             ["entailment", "neutral", "contradiction"]),
    "qnli": (["index", "question", "sentence", "label"], ["index", "question", "sentence"],
             ["entailment", "not_entailment"]),
    "rte": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"],
            ["entailment", "not_entailment"]),
    "wnli": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"], ["0", "1"]),
}


def _row(task: str, i: int, rng: random.Random, label) -> list:
    a, b = sentence(rng), sentence(rng)
    return {
        "cola": lambda: ["src", label, "", a],
        "sst2": lambda: [a, label],
        "mrpc": lambda: [label, i, i + 1000, a, b],
        "qqp": lambda: [i, 2 * i, 2 * i + 1, a, b, label],
        "stsb": lambda: [i, "main", "f", "2012", i, "s", "s", a, b, label],
        "mnli": lambda: [i, i, i, "fiction", a, b, label, label],
        "qnli": lambda: [i, a, b, label],
        "rte": lambda: [i, a, b, label],
        "wnli": lambda: [i, a, b, label],
    }[task]()


def _test_row(task: str, i: int, rng: random.Random) -> list:
    a, b = sentence(rng), sentence(rng)
    return {"cola": [i, a], "sst2": [i, a], "mrpc": [i, i, i + 1, a, b], "qqp": [i, a, b],
            "stsb": [i, "main", "f", "2012", i, "s", "s", a, b]}.get(task, [i, i, i, "fiction", a, b]
                                                                     if task == "mnli" else [i, a, b])


def make_glue_task(task: str, folder: Path, n_train: int = 16, n_dev: int = 8, n_test: int = 4) -> Path:
    """A task folder in the official GLUE layout with random sentences and cycling labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(task)
    header, test_header, labels = LAYOUTS[task]

    def label(i: int):
        return f"{(i * 7 % 50) / 10:.2f}" if labels is None else labels[i % len(labels)]

    dev_names = ["dev_matched", "dev_mismatched"] if task == "mnli" else ["dev"]
    test_names = ["test_matched", "test_mismatched"] if task == "mnli" else ["test"]
    _write(folder / "train.tsv", header, [_row(task, i, rng, label(i)) for i in range(n_train)])
    for name in dev_names:
        _write(folder / f"{name}.tsv", header, [_row(task, i, rng, label(i)) for i in range(n_dev)])
    for name in test_names:
        _write(folder / f"{name}.tsv", test_header, [_test_row(task, i, rng) for i in range(n_test)])
    return folder


def make_squad(folder: Path, version: str = "v1.1", n: int = 12) -> Path:
    """train/dev files in the official SQuAD JSON format; v2.0 adds unanswerable questions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(version)
    for split in ("train", "dev"):
        paragraphs = []
        for i in range(n):
            filler = " ".join(sentence(rng, 9) + "." for _ in range(6))
            answer = f"river {WORDS[i % len(WORDS)]} {i}"
            context = f"{filler} The answer is {answer} today. {filler}"
            start = context.index(answer)
            qas = [{"id": f"{split}-{i}", "question": f"what is the answer {i}?",
                    "answers": [{"text": answer, "answer_start": start}], "is_impossible": False}]
            if version == "v2.0" and i % 3 == 0:
                qas.append({"id": f"{split}-{i}-x", "question": "who owns the moon?", "answers": [],
                            "is_impossible": True})
            paragraphs.append({"context": context, "qas": qas})
        (folder / f"{split}-{version}.json").write_text(json.dumps({"version": version, "data": [
            {"title": "fixture", "paragraphs": paragraphs}]}))
    return folder


def make_tiny_bert(folder: Path) -> Path:
    """A 2-layer random BERT with a small WordPiece tokenizer, saved as a model folder."""
    return make_tiny_model(folder, "bert")


def make_tiny_model(folder: Path, family: str, **overrides) -> Path:
    """A 2-layer random base model of `family` (config `overrides` on top) with a small WordPiece tokenizer, saved
    as a model folder."""
    import torch

    from earlybert.data.corpus import train_wordpiece
    from earlybert.models.adapters import adapter_for_type
    from tests.conftest import FAMILY_EXTRAS

    rng = random.Random(0)
    tokenizer = train_wordpiece([sentence(rng, 12) + " what is the answer river moon owns who ?" for _ in range(200)]
                                + [str(i) for i in range(100)], vocab_size=200)
    torch.manual_seed(0)
    extras = {**FAMILY_EXTRAS.get(family, {}), "pad_token_id": tokenizer.pad_token_id, **overrides}
    adapter = adapter_for_type(family)
    config = adapter.new_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=4,
                                intermediate_size=48, max_positions=128 + adapter.position_offset,
                                hidden_dropout=0.1, attention_dropout=0.1, **extras)
    adapter.hf_classes["base"](config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
