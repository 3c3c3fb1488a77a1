"""The payoff benchmark's tasks (built from registry packages) and its table over tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.payoff import overall, task_rows
from benchmarks.payoff_tasks import cut, genre_split, read_task, sentiment_rows, untag, write_task


def test_cut_keeps_each_labels_share_and_the_original_order():
    rows = [(f"s{i}", 0 if i % 4 else 1) for i in range(400)]  # a quarter labelled 1
    kept = cut(rows, 100)
    assert len(kept) == 100 and sum(label for _, label in kept) == 25
    assert kept == sorted(kept, key=lambda r: int(r[0][1:])) and kept == cut(rows, 100)
    assert cut(rows[:50], 100) == rows[:50]


def test_sentiment_rows_drop_the_empty_records_and_duplicates(tmp_path):
    fixtures = tmp_path / "test" / "fixtures"
    fixtures.mkdir(parents=True)
    for source, items in {"amazon": [{"text": "Great\tphone.  ", "class": 1}, {"text": "", "class": None}],
                          "imdb": [{"text": "Dull plot.", "class": 0}, {"text": "Great phone.", "class": 1}],
                          "yelp": [{"text": "Cold food.", "class": 0}]}.items():
        (fixtures / f"{source}.json").write_text(json.dumps(items))
    assert sentiment_rows(tmp_path) == [("Great phone.", 1), ("Dull plot.", 0), ("Cold food.", 0)]


def test_brown_sentences_lose_their_tags_and_dev_documents_are_not_trained_on():
    assert untag("The/at jury/nn said/vbd ``/`` no/at ''/'' ,/, too/rb ./.") == 'The jury said " no ", too.'
    sentence = "word " * 12
    docs = {f"c{letter}{n:02d}": [f"{letter}{n} {sentence}"] * 40 for letter in "ahkd" for n in range(1, 11)}
    splits = genre_split(docs)
    seen = {split: {text.split()[0] for text, _ in rows} for split, rows in splits.items()}
    assert not seen["train"] & seen["dev"] and {"a1", "a6", "h1", "k6"} <= seen["dev"]
    # Four groups, balanced: 8 training documents x 40 sentences per letter, all of them sampled.
    assert sorted({label for _, label in splits["train"]}) == [0, 1, 2, 3]
    assert len(splits["train"]) == 4 * 320 and len(splits["dev"]) == 4 * 80


def test_a_written_task_reads_back_in_the_glue_layout(tmp_path):
    splits = {"train": [("a b", 0), ("c d", 1)], "dev": [("e f", 1)]}
    write_task(tmp_path / "task", splits, ("no", "yes"))
    assert read_task(tmp_path / "task") == splits
    assert (tmp_path / "task" / "labels.txt").read_text() == "no\nyes\n"
    assert not (tmp_path / "task.tmp").exists()


def comparison(full, earlybert, random, saved=0.3, collapsed=(False, False)):
    runs = [{"variant": "full", "mode": "full", "value": v, "seed": i} for i, v in enumerate(full)]
    runs += [{"variant": "earlybert-h0.333-f0.4", "mode": "earlybert", "value": v, "seed": i,
              "draw_check": {"judged": True, "given_back": 0.2 + c, "collapsed": c}}
             for i, (v, c) in enumerate(zip(earlybert, collapsed))]
    runs += [{"variant": "random-h0.333-f0.4", "mode": "random", "value": v, "seed": i} for i, v in enumerate(random)]

    def row(name, mode, values, time_saved):
        return {"variant": name, "mode": mode, "mean": sum(values) / len(values), "std": 0.0,
                "time_saved": time_saved}

    return {"runs": runs, "rows": [row("full", "full", full, 0.0),
                                   row("earlybert-h0.333-f0.4", "earlybert", earlybert, saved),
                                   row("random-h0.333-f0.4", "random", random, saved + 0.1)]}


def test_a_setting_holds_on_a_task_only_within_a_point_of_full_above_random_and_no_seed_3_points_down():
    tables = {"close": task_rows(comparison([0.80, 0.82], [0.80, 0.805], [0.70, 0.72])),
              "one-seed-falls": task_rows(comparison([0.80, 0.82], [0.85, 0.77], [0.70, 0.72], collapsed=(0, 1))),
              "random-as-good": task_rows(comparison([0.80, 0.82], [0.80, 0.81], [0.81, 0.81])),
              "two-points-down": task_rows(comparison([0.80, 0.82], [0.79, 0.79], [0.70, 0.72]))}
    rows = {r["variant"]: r for r in tables["one-seed-falls"]}
    assert rows["earlybert-h0.333-f0.4"]["worst"] == 0.77 and rows["earlybert-h0.333-f0.4"]["collapse_warnings"] == 1
    totals = {r["variant"]: r for r in overall(tables)}
    learned = totals["earlybert-h0.333-f0.4"]
    assert learned["holds_on"] == ["close"] and learned["tasks"] == 4
    assert learned["worst_task_vs_full"] == pytest.approx(-0.02) and learned["time_saved"] == pytest.approx(0.3)


def test_payoff_refuses_a_missing_model_in_one_line(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.payoff", "--model", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "out")], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 2 and "no config.json" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()
