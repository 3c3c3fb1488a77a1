"""Bad input to `earlybert finetune` and `earlybert evaluate`: one line on stderr, exit code 2."""

import json

import pytest

from earlybert.cli import main as cli_main
from earlybert.finetune import main as finetune_main
from tests.conftest import REPO
from tests.task_fixtures import make_glue_task, make_squad, make_tiny_bert

GLUE_YAML = str(REPO / "configs/finetune/glue.yaml")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def corrupt_label_column(folder):
    text = (folder / "train.tsv").read_text().replace("sentence\tlabel", "sentence\tgold", 1)
    (folder / "train.tsv").write_text(text)


def label_out_of_range(folder):
    lines = (folder / "dev.tsv").read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t7"
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")


def empty_train(folder):
    (folder / "train.tsv").write_text("sentence\tlabel\n")


def shifted_answer(folder):
    data = json.loads((folder / "train-v1.1.json").read_text())
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] += 3
    (folder / "train-v1.1.json").write_text(json.dumps(data))


CASES = {
    "unknown task": ("glue", "sst2", None, ["task=sst5"], "unknown task 'sst5': use one of cola, sst2"),
    "missing label column": ("glue", "sst2", corrupt_label_column, [], "has no label column 'label'"),
    "label out of range": ("glue", "sst2", label_out_of_range, [],
                           "dev.tsv row 3: label '7' is out of range for task sst2"),
    "empty dataset": ("glue", "sst2", empty_train, [], "train.tsv holds no examples"),
    "answer_start mismatch": ("squad", "squad", shifted_answer, [], "has answer_start"),
    "unknown mode": ("glue", "sst2", None, ["mode=prune"], "mode='prune' is unknown"),
    "missing data_dir": ("glue", "sst2", None, ["data_dir=/nonexistent/glue"], "data_dir /nonexistent/glue does not"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_finetune_input(case, tiny_bert, tmp_path, capsys):
    kind, task, corrupt, extra, message = CASES[case]
    data_dir = make_squad(tmp_path / "d") if kind == "squad" else make_glue_task(task, tmp_path / "d")
    if corrupt:
        corrupt(data_dir)
    out = tmp_path / "out"
    capsys.readouterr()
    code = finetune_main([kind, "--config", GLUE_YAML, f"task={task}", f"model={tiny_bert}", f"data_dir={data_dir}",
                          f"output_dir={out}", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("earlybert finetune: error: ") and message in err[0], err[0]
    assert not out.exists()


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
