"""SQuAD v1.1/v2.0: read the official JSON, features by doc stride with offsets, answers mapped back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from earlybert.errors import EarlyBertError


@dataclass
class QAExample:
    qid: str
    question: str
    context: str
    answers: list[str]
    answer_start: int | None  # of the first answer; None when unanswerable


def read_squad(path: str | Path, check_offsets: bool = True) -> list[QAExample]:
    """Questions of an official SQuAD JSON file, checking every answer_start against its context (training
    needs the offsets; scoring, like the official script, does not)."""
    path = Path(path)
    if not path.is_file():
        raise EarlyBertError(f"SQuAD file {path} does not exist: point data_dir at train-v*.json and dev-v*.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise EarlyBertError(f"{path} is not a SQuAD JSON file (needs a top-level 'data' list)") from None
    try:
        out = [example for article in data for para in article.get("paragraphs", [])
               for example in _paragraph_examples(para, path, check_offsets)]
    except KeyError as e:
        raise EarlyBertError(f"{path}: a paragraph, question or answer lacks the key {e.args[0]!r} (SQuAD needs "
                             "context, qas, id, question, answers with text and answer_start): fix the file") from None
    except (TypeError, AttributeError):
        raise EarlyBertError(f"{path} does not have SQuAD's nesting (data -> paragraphs -> qas -> answers): "
                             "fix the file") from None
    if not out:
        raise EarlyBertError(f"{path} holds no questions: give a non-empty SQuAD file")
    return out


def _paragraph_examples(para: dict, path: Path, check_offsets: bool) -> list[QAExample]:
    context, out = para["context"], []
    for qa in para["qas"]:
        answers = qa["answers"] if not qa.get("is_impossible", False) else qa.get("answers", [])
        for a in answers:
            start, text = a["answer_start"], a["text"]
            if check_offsets and context[start:start + len(text)] != text:
                raise EarlyBertError(
                    f"{path}: question {qa['id']} has answer_start {start} but the context there reads "
                    f"{context[start:start + len(text)]!r}, not {text!r}: fix the answer offsets")
        impossible = qa.get("is_impossible", False) or not answers
        out.append(QAExample(qa["id"], qa["question"], context, [a["text"] for a in answers],
                             None if impossible else answers[0]["answer_start"]))
    return out


def load_hub_squad(name: str, split: str) -> list[QAExample]:
    """A SQuAD split from the Hub (`rajpurkar/squad` or `rajpurkar/squad_v2`)."""
    from earlybert.data.hub import load_hub_dataset

    out = []
    for row in load_hub_dataset(name, split=split, hint="set data_dir to a folder with the official "
                                "train-v*.json and dev-v*.json"):
        texts, starts = row["answers"]["text"], row["answers"]["answer_start"]
        out.append(QAExample(row["id"], row["question"], row["context"], list(texts),
                             starts[0] if texts else None))
    if not out:
        raise EarlyBertError(f"{name} split {split} holds no questions")
    return out


def gold_answers(examples: list[QAExample]) -> dict[str, list[str]]:
    """Question id -> gold answers ([""] for unanswerable ones)."""
    return {e.qid: (e.answers or [""]) for e in examples}


def _encode(tokenizer, examples: list[QAExample], max_len: int, stride: int):
    return tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                     truncation="only_second", max_length=max_len, stride=stride, return_overflowing_tokens=True,
                     return_offsets_mapping=True, padding="max_length")


def train_features(tokenizer, examples: list[QAExample], max_len: int, stride: int) -> dict[str, torch.Tensor]:
    """Windows over each context with start/end token positions (the [CLS] position when outside the window)."""
    enc = _encode(tokenizer, examples, max_len, stride)
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        s = e = 0
        if ex.answer_start is not None:
            a0, a1 = ex.answer_start, ex.answer_start + len(ex.answers[0])
            ctx = [j for j, sid in enumerate(seq) if sid == 1]
            if ctx and offsets[ctx[0]][0] <= a0 and offsets[ctx[-1]][1] >= a1:
                s = next(j for j in ctx if offsets[j][1] > a0)
                e = next(j for j in reversed(ctx) if offsets[j][0] < a1)
        starts.append(s)
        ends.append(e)
    out = {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.tensor(enc["attention_mask"]),
           "start_positions": torch.tensor(starts), "end_positions": torch.tensor(ends)}
    if "token_type_ids" in enc:
        out["token_type_ids"] = torch.tensor(enc["token_type_ids"])
    return out


def eval_features(tokenizer, examples: list[QAExample], max_len: int, stride: int):
    """Model inputs plus, per window, its example index and the context offsets (None outside the context)."""
    enc = _encode(tokenizer, examples, max_len, stride)
    offsets = [[o if sid == 1 else None for o, sid in zip(offs, enc.sequence_ids(i))]
               for i, offs in enumerate(enc["offset_mapping"])]
    inputs = {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.tensor(enc["attention_mask"])}
    if "token_type_ids" in enc:
        inputs["token_type_ids"] = torch.tensor(enc["token_type_ids"])
    return inputs, list(enc["overflow_to_sample_mapping"]), offsets


def postprocess(examples: list[QAExample], example_of: list[int], offsets: list, start_logits: np.ndarray,
                end_logits: np.ndarray, n_best: int = 20, max_answer_len: int = 30,
                version_2: bool = False, null_threshold: float = 0.0) -> tuple[dict[str, str], dict[str, float]]:
    """Best answer text per question (n-best spans over all windows), and for v2 the null-minus-span score."""
    by_example: dict[int, list[int]] = {}
    for f, ex in enumerate(example_of):
        by_example.setdefault(ex, []).append(f)
    predictions, null_scores = {}, {}
    for ex_index, ex in enumerate(examples):
        best_text, best_score, null_score = "", -np.inf, np.inf
        for f in by_example.get(ex_index, []):
            s_log, e_log, offs = start_logits[f], end_logits[f], offsets[f]
            null_score = min(null_score, float(s_log[0] + e_log[0]))
            for s in np.argsort(s_log)[::-1][:n_best]:
                for e in np.argsort(e_log)[::-1][:n_best]:
                    if offs[s] is None or offs[e] is None or e < s or e - s + 1 > max_answer_len:
                        continue
                    score = float(s_log[s] + e_log[e])
                    if score > best_score:
                        best_score, best_text = score, ex.context[offs[s][0]:offs[e][1]]
        diff = null_score - best_score if np.isfinite(best_score) else np.inf
        null_scores[ex.qid] = float(min(diff, 1e9))
        predictions[ex.qid] = "" if version_2 and diff > null_threshold else best_text
    return predictions, null_scores
