"""The demo pipeline at reduced size, and the report it writes."""

import json

import pytest

from earlybert.cli import main as cli_main
from earlybert.recipes.demo import run_demo, write_demo_data

pytestmark = pytest.mark.slow  # integration runs: `make test` runs them, `make test-fast` does not


def test_demo_data_is_a_real_three_class_task(tmp_path):
    corpus, task = write_demo_data(tmp_path)
    assert corpus.stat().st_size > 300_000
    train = (task / "train.tsv").read_text().splitlines()
    dev = (task / "dev.tsv").read_text().splitlines()
    assert train[0] == "sentence\tlabel" and len(train) > 400 and len(dev) > 100
    assert {line.rsplit("\t", 1)[1] for line in train[1:]} == {"0", "1", "2"}
    assert (task / "labels.txt").read_text().split("\n")[:3] == ["statements", "expressions", "types and objects"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    summary = run_demo(str(out), pretrain_overrides=["train.max_steps=50", "search.max_search_steps=30",
                                                     "model.num_layers=2", "train.micro_batch_size=8"],
                       finetune_overrides=["epochs=1"])
    return out, summary


def test_demo_writes_report_and_consistent_summary(demo_run, capsys):
    out, numbers = demo_run
    for name in ("report.html", "loss.png", "loss_vs_time.png", "mask_distance.png", "heads.png", "ffn_kept.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 1000, name
    saved = json.loads((out / "summary.json").read_text())
    base = json.loads((out / "full-baseline" / "summary.json").read_text())
    demo = json.loads((out / "demo.json").read_text())["demo"]
    assert demo == numbers
    assert demo["fired_at"] == saved["ticket_step"] <= 30
    # Both times are measured: the full model trained for the same 50 steps beside the EarlyBERT run.
    assert base["steps"] == saved["steps"] == 50 and base["stage"] == "full" and saved["stage"] == "slim"
    assert demo["pretrain_time_s"] == pytest.approx(sum(saved["time_s"].values()))
    assert demo["full_pretrain_time_s"] == pytest.approx(base["time_s"]["full"])
    # Counted FLOPs: the search's steps cost the full model's, the slim steps less.
    full_per_token, slim_per_token = saved["full"]["train_flops_per_token"], saved["slim"]["train_flops_per_token"]
    drawn = demo["fired_at"]
    expected = 1 - (drawn * full_per_token + (50 - drawn) * slim_per_token) / (50 * full_per_token)
    assert demo["flops_saved_vs_full"] == pytest.approx(expected, rel=0.02)
    assert demo["downstream_accuracy"] == json.loads((out / "finetune" / "eval_results.json").read_text())["accuracy"]
    assert 0.0 <= demo["downstream_accuracy"] <= 1.0
    html = (out / "report.html").read_text()
    assert f"ticket drawn at step {saved['ticket_step']}" in html and "loss_vs_time.png" in html
    assert f"{saved['slim']['params']:,}" in html
    assert (out / "model" / "config.json").is_file()


def test_report_command_on_a_run_folder_and_on_a_wrong_folder(demo_run, tmp_path, capsys):
    out, _ = demo_run
    (out / "report.html").unlink()
    assert cli_main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()
    assert cli_main(["report", str(out / "finetune")]) == 0  # fine-tuning runs too
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a finished run folder" in err[0]
