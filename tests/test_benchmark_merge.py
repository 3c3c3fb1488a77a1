"""The merge benchmark's table: per method, each task's accuracy and their mean over seeds."""

import pytest

from benchmarks.merge import markdown, table


def test_table_takes_mean_and_std_over_seeds_of_each_task_and_of_the_task_mean():
    scores = {"single": {"seed1": {"bbc-topic": 0.9, "spam-subjects": 0.8},
                         "seed2": {"bbc-topic": 0.7, "spam-subjects": 0.8}},
              "rankmean": {"seed1": {"bbc-topic": 0.6, "spam-subjects": 0.5},
                           "seed2": {"bbc-topic": 0.6, "spam-subjects": 0.7}}}
    single, rankmean = table(scores)
    assert single["bbc-topic"] == {"mean": pytest.approx(0.8), "std": pytest.approx(0.1414, abs=1e-4)}
    assert single["mean"]["mean"] == pytest.approx(0.8) and single["seeds"] == 2
    assert rankmean["mean"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.0707, abs=1e-4)}
    text = markdown([single, rankmean])
    assert "| each task's own slim model | 80.00 ± 14.14 | 80.00 ± 0.00 | 80.00 ± 7.07 |" in text
    assert "| merged: rankmean | 60.00 ± 0.00 | 60.00 ± 14.14 | 60.00 ± 7.07 |" in text
