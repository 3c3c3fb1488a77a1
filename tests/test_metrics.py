import pytest

from earlybert.tasks.metrics import (
    accuracy,
    f1_binary,
    matthews_correlation,
    normalize_answer,
    pearson,
    spearman,
    squad_v1,
    squad_v2,
)


def test_squad_example_from_the_issue():
    golds = {"q1": ["Denver Broncos", "the broncos"], "q2": ["Levi's Stadium in Santa Clara"], "q3": ["y"]}
    preds = {"q1": "The Denver Broncos!", "q2": "Santa Clara, California", "q3": "x"}
    scores = squad_v1(golds, preds)
    assert scores["exact_match"] == pytest.approx(100 / 3, abs=0.005)
    assert scores["f1"] == pytest.approx(50.0)


def test_normalisation_and_missing_predictions():
    assert normalize_answer("  The  Quick, brown-fox! ") == "quick brownfox"
    assert normalize_answer("An apple a day") == "apple day"
    assert squad_v1({"a": ["x"], "b": ["y"]}, {"a": "x"}) == {"exact_match": 50.0, "f1": 50.0}


def test_squad_v2_splits_has_and_no_answer_and_finds_the_best_threshold():
    golds = {"a": ["Paris"], "b": [""], "c": ["blue whale"]}
    preds = {"a": "Paris", "b": "London", "c": ""}
    scores = squad_v2(golds, preds, null_probs={"a": 0.1, "b": 0.9, "c": 0.8})
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["HasAns_exact"] == 50.0 and scores["NoAns_exact"] == 0.0
    assert scores["HasAns_total"] == 2 and scores["NoAns_total"] == 1
    # Answering empty above null-probability 0.1 fixes b and keeps a: 2 of 3.
    assert scores["best_exact"] == pytest.approx(200 / 3) and scores["best_exact_thresh"] == 0.1


def test_glue_metrics_by_hand():
    preds, labels = [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0]
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    assert f1_binary(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # tp=2 tn=2 fp=1 fn=1: (4 - 1) / sqrt(3*3*3*3)
    assert matthews_correlation(preds, labels) == pytest.approx(3 / 9)
    assert matthews_correlation([1, 1, 1], [1, 0, 1]) == 0.0
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
