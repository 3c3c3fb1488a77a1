"""Official GLUE and SQuAD metrics: accuracy, F1, Matthews, Pearson/Spearman, SQuAD EM/F1 (v1.1 and v2.0)."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    return float(np.mean(np.asarray(preds) == np.asarray(labels)))


def f1_binary(preds: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class (1), as GLUE reports for MRPC and QQP."""
    p, y = np.asarray(preds), np.asarray(labels)
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_correlation(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation for binary labels (CoLA); 0 when a marginal is empty."""
    p, y = np.asarray(preds), np.asarray(labels)
    tp = float(((p == 1) & (y == 1)).sum())
    tn = float(((p == 0) & (y == 0)).sum())
    fp = float(((p == 1) & (y == 0)).sum())
    fn = float(((p == 0) & (y == 1)).sum())
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.corrcoef(np.asarray(x, dtype=float), np.asarray(y, dtype=float))[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float)))


# ---- SQuAD -------------------------------------------------------------------------------------

def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop a/an/the, collapse whitespace (the official normalisation)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # SQuAD v2: an empty answer matches only an empty gold
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: dict[str, list[str]], predictions: dict[str, str]) -> tuple[dict, dict]:
    """Per-question (exact match, F1): best over the gold answers; a question with no prediction scores 0.

    An unanswerable question has golds `[""]`.
    """
    em, f1 = {}, {}
    for qid, answers in golds.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        if qid not in predictions:
            em[qid] = f1[qid] = 0.0
            continue
        pred = predictions[qid]
        em[qid] = max(exact_match(pred, a) for a in answers)
        f1[qid] = max(token_f1(pred, a) for a in answers)
    return em, f1


def squad_v1(golds: dict[str, list[str]], predictions: dict[str, str]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, as the v1.1 script prints them."""
    em, f1 = squad_scores(golds, predictions)
    n = max(1, len(golds))
    return {"exact_match": 100.0 * sum(em.values()) / n, "f1": 100.0 * sum(f1.values()) / n}


def _best_threshold(scores: dict[str, float], null_probs: dict[str, float], has_answer: dict[str, bool],
                    predictions: dict[str, str]) -> tuple[float, float]:
    """Best score over null thresholds: below it a question is answered empty (the v2.0 script's search)."""
    num_no_ans = sum(1 for v in has_answer.values() if not v)
    current = best = float(num_no_ans)
    best_thresh = 0.0
    for qid in sorted(null_probs, key=lambda k: null_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            diff = scores[qid]
        elif predictions.get(qid):
            diff = -1.0
        else:
            diff = 0.0
        current += diff
        if current > best:
            best, best_thresh = current, null_probs[qid]
    return 100.0 * best / max(1, len(scores)), best_thresh


def squad_v2(golds: dict[str, list[str]], predictions: dict[str, str],
             null_probs: dict[str, float] | None = None) -> dict[str, float]:
    """SQuAD v2.0: overall, HasAns and NoAns EM/F1, plus best thresholds when null probabilities are given."""
    em, f1 = squad_scores(golds, predictions)
    has_answer = {q: any(normalize_answer(a) for a in answers) for q, answers in golds.items()}
    out = {"exact_match": 100.0 * np.mean(list(em.values())), "f1": 100.0 * np.mean(list(f1.values())),
           "total": len(golds)}
    for name, keep in (("HasAns", True), ("NoAns", False)):
        ids = [q for q, h in has_answer.items() if h == keep]
        if ids:
            out[f"{name}_exact"] = 100.0 * np.mean([em[q] for q in ids])
            out[f"{name}_f1"] = 100.0 * np.mean([f1[q] for q in ids])
            out[f"{name}_total"] = len(ids)
    if null_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(em, null_probs, has_answer, predictions)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(f1, null_probs, has_answer, predictions)
    return {k: float(v) for k, v in out.items()}
