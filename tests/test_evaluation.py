"""`earlybert evaluate`: the official scripts' numbers from prediction files."""

import json

import pytest

from earlybert.cli import main as cli_main
from tests.conftest import REPO
from tests.task_fixtures import make_glue_task, make_tiny_bert

GLUE_YAML = str(REPO / "configs/finetune/glue.yaml")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_evaluate_squad_matches_the_official_example(tmp_path, capsys):
    context = "The Denver Broncos won; the broncos played at Levi's Stadium in Santa Clara. y is here."
    golds = {"q1": ["Denver Broncos", "the broncos"], "q2": ["Levi's Stadium in Santa Clara"], "q3": ["y"]}
    qas = [{"id": q, "question": "?", "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}
           for q, answers in golds.items()]
    data = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(data))
    preds = {"q1": "The Denver Broncos!", "q2": "Santa Clara, California", "q3": "x"}
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    capsys.readouterr()
    assert cli_main(["evaluate", "squad", "--data", str(tmp_path / "dev.json"), "--predictions",
                     str(tmp_path / "pred.json")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["exact_match"] == pytest.approx(33.333, abs=0.001) and scores["f1"] == pytest.approx(50.0)


def test_evaluate_glue_scores_a_prediction_file(tmp_path, capsys):
    folder = make_glue_task("mrpc", tmp_path / "mrpc")
    labels = [line.split("\t")[0] for line in (folder / "dev.tsv").read_text().splitlines()[1:]]
    rows = ["index\tprediction"] + [f"{i}\t{'1' if i < 4 else labels[i]}" for i in range(len(labels))]
    (tmp_path / "pred.tsv").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert cli_main(["evaluate", "glue", "--task", "mrpc", "--data", str(folder), "--predictions",
                     str(tmp_path / "pred.tsv")]) == 0
    scores = json.loads(capsys.readouterr().out)
    # Labels cycle 0,1,0,1,...: predicting 1 for the first four gets 2 of 4 wrong there.
    assert scores["accuracy"] == pytest.approx(6 / 8)
    assert scores["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 0))


def test_evaluate_squad_scores_a_file_whose_offsets_are_off(tmp_path):
    """Scoring, like the official script, reads the answers' text only: shifted answer_start values are fine."""
    import json

    from earlybert.tasks.evaluation import evaluate_squad_files
    from tests.task_fixtures import make_squad

    folder = make_squad(tmp_path / "squad")
    data = json.loads((folder / "dev-v1.1.json").read_text())
    qas = [qa for para in data["data"][0]["paragraphs"] for qa in para["qas"]]
    for qa in qas:
        for answer in qa["answers"]:
            answer["answer_start"] += 3
    (folder / "dev-v1.1.json").write_text(json.dumps(data))
    predictions = {qa["id"]: qa["answers"][0]["text"] for qa in qas}
    (tmp_path / "preds.json").write_text(json.dumps(predictions))
    scores = evaluate_squad_files(str(folder / "dev-v1.1.json"), str(tmp_path / "preds.json"))
    assert scores == {"exact_match": 100.0, "f1": 100.0}
