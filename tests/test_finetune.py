"""Fine-tuning end to end on tiny fixtures: every GLUE task, SQuAD v1.1/v2.0, every mode."""

import json
from pathlib import Path

import pytest

from earlybert.recipes.finetune import main as finetune_main
from tests.conftest import REPO
from tests.task_fixtures import LAYOUTS, make_glue_task, make_squad, make_tiny_bert

GLUE_YAML = str(REPO / "configs/finetune/glue.yaml")
SQUAD_YAML = str(REPO / "configs/finetune/squad.yaml")
FAST = ["epochs=2", "train.micro_batch_size=8", "train.lr=1e-3", "search.check_every=1",
        "search.max_search_steps=2", "search.window=2", "eval_batch_size=16", "log.progress_bar=false"]
METRIC_KEYS = {"cola": {"matthews_correlation"}, "stsb": {"pearson", "spearmanr"}, "mrpc": {"accuracy", "f1"},
               "qqp": {"accuracy", "f1"}, "mnli": {"accuracy", "accuracy_mm"}}
SUBMISSIONS = {"cola": ["CoLA"], "sst2": ["SST-2"], "mrpc": ["MRPC"], "qqp": ["QQP"], "stsb": ["STS-B"],
               "mnli": ["MNLI-m", "MNLI-mm"], "qnli": ["QNLI"], "rte": ["RTE"], "wnli": ["WNLI"]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def slim_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT shrunk by a ticket, for mode=slim."""
    from earlybert.models.checkpoint import copy_tokenizer_files, load_model
    from earlybert.ticket.shrink import shrink_model
    from earlybert.ticket.ticket import Ticket

    out = tmp_path_factory.mktemp("slim-bert")
    ticket = Ticket("bert", heads=[[1, 1, 0, 1], [0, 1, 0, 0]], ffn=[[1] * 30 + [0] * 18, [1] * 12 + [0] * 36])
    shrink_model(load_model(tiny_bert), ticket).save_pretrained(out)
    copy_tokenizer_files(tiny_bert, out)
    return out


def run_mode(config, model, task, data_dir, mode, out, capsys, *extra):
    code = finetune_main(["squad" if task.startswith("squad") else "glue", "--config", config, f"task={task}",
                          f"model={model}", f"data_dir={data_dir}", f"mode={mode}", f"output_dir={out}", *FAST,
                          *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("task", list(LAYOUTS))
@pytest.mark.parametrize("mode", ["full", "earlybert", "random", "slim"])
def test_glue_task_runs_in_every_mode(task, mode, tiny_bert, slim_bert, tmp_path, capsys):
    data_dir = make_glue_task(task, tmp_path / task)
    model = slim_bert if mode == "slim" else tiny_bert
    summary = run_mode(GLUE_YAML, model, task, data_dir, mode, tmp_path / "out", capsys)
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert set(results) == METRIC_KEYS.get(task, {"accuracy"})
    for name in SUBMISSIONS[task]:
        lines = (tmp_path / "out" / f"{name}.tsv").read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 5
    if task != "mnli":  # the dev predictions score to the run's own results with `earlybert evaluate glue`
        from earlybert.tasks.evaluation import evaluate_glue_files

        scored = evaluate_glue_files(task, str(data_dir), str(tmp_path / "out" / "dev_predictions.tsv"))
        assert scored == pytest.approx(results)
    # glue.yaml continues from the draw: the 2 search steps and the slim stage make the full run's 4 steps.
    assert summary["steps"] == 4 and summary["mode"] == mode
    if mode == "earlybert":
        assert summary["stage"] == "slim" and summary["ticket_step"] == 2
        ticket = json.loads((tmp_path / "out" / "ticket.json").read_text())
        assert ticket["step"] == 2 and ticket["weights"] == "continue" and ticket["drawn_by"] in ("fired", "limit")
        assert ticket["fired"] == (ticket["drawn_by"] == "fired")
    if mode == "random":
        assert summary["stage"] == "slim" and summary["slim"]["layer_heads"] == [3, 3]
    if mode == "slim":
        assert summary["slim"]["layer_heads"] == [3, 1]


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
@pytest.mark.parametrize("mode", ["full", "earlybert", "random", "slim"])
def test_squad_runs_in_every_mode(version, mode, tiny_bert, slim_bert, tmp_path, capsys):
    task = "squad" if version == "v1.1" else "squad_v2"
    data_dir = make_squad(tmp_path / "squad", version)
    model = slim_bert if mode == "slim" else tiny_bert
    summary = run_mode(SQUAD_YAML, model, task, data_dir, mode, tmp_path / "out", capsys,
                       "max_seq_len=48", "doc_stride=16")
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    dev = json.loads((data_dir / f"dev-{version}.json").read_text())
    ids = {qa["id"] for p in dev["data"][0]["paragraphs"] for qa in p["qas"]}
    assert set(predictions) == ids
    results = summary["eval"]
    assert 0.0 <= results["exact_match"] <= results["f1"] <= 100.0
    if version == "v2.0":
        assert {"HasAns_exact", "NoAns_exact", "best_f1", "best_f1_thresh"} <= set(results)


def test_time_saved_against_a_full_baseline(tiny_bert, tmp_path, capsys):
    data_dir = make_glue_task("sst2", tmp_path / "sst2")
    full = run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "full", tmp_path / "full", capsys)
    slim = run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "random", tmp_path / "random", capsys,
                    f"baseline_dir={tmp_path / 'full'}")
    assert slim["baseline_train_time_s"] == pytest.approx(full["train_time_s"])
    # The baseline's time is read from its folder (not re-measured); timings themselves are never asserted.
    assert slim["baseline_eval"] == full["eval"] and "time_saved" in slim


@pytest.mark.slow
@pytest.mark.parametrize("kill_step, stage", [(12, "search"), (40, "slim")])
def test_finetune_sigkill_then_resume_matches_an_uninterrupted_run(kill_step, stage, tiny_bert, tmp_path):
    from tests.conftest import UninterruptedRuns, kill_at_step, run_earlybert

    data_dir = make_glue_task("sst2", tmp_path / "sst2", n_train=64)
    args = ["finetune", "glue", "--config", GLUE_YAML, "task=sst2", f"model={tiny_bert}", f"data_dir={data_dir}",
            "mode=earlybert", "epochs=8", "train.micro_batch_size=8", "train.lr=1e-3", "search.check_every=1",
            "search.window=3", "search.threshold=0.0", "search.max_search_steps=30", "checkpoint.every=5",
            "log.progress_bar=false"]
    def uninterrupted(name: str) -> Path:
        done = run_earlybert(*args, f"output_dir={tmp_path / name}")
        assert done.returncode == 0, done.stderr[-3000:]
        return tmp_path / name

    uninterrupted("full")
    kill_at_step([*args, f"output_dir={tmp_path / 'run'}"], tmp_path / "run", kill_step)
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text()
    assert json.loads((tmp_path / "run" / "checkpoints" / latest / "trainer_state.json").read_text())["stage"] == stage
    resumed = run_earlybert(*args, f"output_dir={tmp_path / 'run'}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = UninterruptedRuns(tmp_path / "full", lambda n: uninterrupted(f"full-{n}")).assert_matches(tmp_path / "run")
    assert (json.loads((tmp_path / "run" / "eval_results.json").read_text())
            == json.loads((full / "eval_results.json").read_text()))


def test_rewind_starts_the_slim_stage_at_warm_up_with_a_fresh_optimizer(tiny_bert, tmp_path, capsys):
    import torch

    data_dir = make_glue_task("sst2", tmp_path / "sst2", n_train=64)
    out = tmp_path / "out"
    summary = run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "earlybert", out, capsys, "search.draw_at=3",
                       "search.weights=rewind", "train.warmup_steps=4", "epochs=1", "checkpoint.every=1000")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    slim = [r for r in rows if r["stage"] == "slim"]
    # The run is 8 steps (64 examples, batch 8); the slim stage gets its own 8 steps after the draw at 3.
    assert (summary["ticket_step"], summary["drawn_by"], summary["steps"], len(slim)) == (3, "draw_at", 11, 8)
    assert [r["lr"] for r in slim[:4]] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert slim[-1]["lr"] == pytest.approx(1e-3 * 1 / 4)
    # AdamW's own step count in the final checkpoint covers the slim stage only: a fresh optimizer.
    latest = (out / "checkpoints" / "latest").read_text()
    state = torch.load(out / "checkpoints" / latest / "mp_rank_00_model_states.pt", weights_only=True)
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {8}


def test_rewarmup_ramps_the_rate_back_after_a_continued_draw_with_the_moments_carried(tiny_bert, tmp_path, capsys):
    data_dir = make_glue_task("sst2", tmp_path / "sst2", n_train=64)
    out = tmp_path / "out"
    summary = run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "earlybert", out, capsys, "search.draw_at=3",
                       "search.weights=continue", "search.rewarmup=3", "train.schedule=constant", "epochs=1",
                       "checkpoint.every=1000")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    slim = [r["lr"] for r in rows if r["stage"] == "slim"]
    assert (summary["ticket_step"], summary["optimizer_state_at_shrink"], len(slim)) == (3, "carried", 5)
    assert [r["lr"] for r in rows if r["stage"] == "search"] == pytest.approx([1e-3] * 3)
    assert slim == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3])


def test_rewind_restores_the_initial_weights_and_head_and_restarts_the_data(tiny_bert, tmp_path, capsys):
    import torch

    from earlybert.models.checkpoint import load_model
    from earlybert.ticket.shrink import shrink_model
    from earlybert.ticket.ticket import Ticket

    data_dir = make_glue_task("sst2", tmp_path / "sst2", n_train=64)
    header, *rows = (data_dir / "train.tsv").read_text().splitlines()
    longer = [row.replace("\t", " more" * (i % 7) + "\t", 1) for i, row in enumerate(rows)]  # batches differ in length
    (data_dir / "train.tsv").write_text("\n".join([header, *longer]) + "\n")
    common = ("search.draw_at=3", "search.weights=rewind", "epochs=1", "checkpoint.every=1000",
              "checkpoint.keep_last=10", "seed=5")
    run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "earlybert", tmp_path / "eb", capsys, *common)
    run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "full", tmp_path / "full", capsys, *common)
    # The checkpoint written at the draw holds the slim model before its first step: the pretrained encoder and
    # the task head as initialised at step 0 (seed 5), shrunk by the ticket.
    torch.manual_seed(5)
    initial = load_model(str(tiny_bert), task="sequence_classification", num_labels=2)
    expected = shrink_model(initial, Ticket.load(tmp_path / "eb" / "ticket.json")).state_dict()
    saved = torch.load(tmp_path / "eb" / "checkpoints" / "step_00000003" / "mp_rank_00_model_states.pt",
                       weights_only=True)["module"]
    got = {k.removeprefix("model."): v for k, v in saved.items()}
    assert expected.keys() <= got.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    # The slim stage reads the batches the full run read, from the first on (dynamic padding: tokens differ).
    def tokens(folder, stage):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r["tokens"] for r in rows if r["stage"] == stage]

    assert tokens(tmp_path / "eb", "slim") == tokens(tmp_path / "full", "full")
    assert len(set(tokens(tmp_path / "full", "full"))) > 1


def test_auto_precision_resolves_to_fp32_on_a_cpu_and_is_logged_and_written(tiny_bert, tmp_path, capsys):
    data_dir = make_glue_task("sst2", tmp_path / "sst2")
    out = tmp_path / "out"
    code = finetune_main(["glue", "--config", GLUE_YAML, "task=sst2", f"model={tiny_bert}", f"data_dir={data_dir}",
                          f"output_dir={out}", *FAST])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"deepspeed_config auto -> fp32 ZeRO-0 on cpu ({out / 'deepspeed.json'})" in stdout
    written = json.loads((out / "deepspeed.json").read_text())
    assert written["zero_optimization"] == {"stage": 0} and not written["bf16"]["enabled"]
    assert written["train_micro_batch_size_per_gpu"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["deepspeed"] == {"given": "auto", "precision": "fp32 ZeRO-0", "device": "cpu",
                                    "file": str(out / "deepspeed.json")}


def test_the_shipped_glue_config_draws_early_on_2000_examples(tiny_bert, tmp_path, capsys):
    data_dir = make_glue_task("sst2", tmp_path / "sst2", n_train=2000)
    out = tmp_path / "out"
    code = finetune_main(["glue", "--config", GLUE_YAML, "task=sst2", f"model={tiny_bert}", f"data_dir={data_dir}",
                          "mode=earlybert", f"output_dir={out}", "log.progress_bar=false"])
    assert code == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    run_steps = 188  # 3 epochs of 2000 examples at batch 32
    assert summary["ticket_step"] <= 0.15 * run_steps and summary["stage"] == "slim"
    assert summary["steps"] == run_steps  # `continue`: the search's steps are part of the run
    assert sum(summary["slim"]["layer_heads"]) < sum(summary["full"]["layer_heads"])


def test_eval_only_scores_a_fine_tuned_model_as_it_is_and_refuses_a_model_without_its_head(tiny_bert, tmp_path,
                                                                                          capsys):
    data_dir = make_glue_task("sst2", tmp_path / "sst2")
    trained = run_mode(GLUE_YAML, tiny_bert, "sst2", data_dir, "full", tmp_path / "run", capsys)
    again = run_mode(GLUE_YAML, tmp_path / "run" / "model", "sst2", data_dir, "slim", tmp_path / "eval", capsys,
                     "eval_only=true")
    assert again["eval"] == trained["eval"] and "steps" not in again
    assert (tmp_path / "eval" / "dev_predictions.tsv").read_text() == (tmp_path / "run" / "dev_predictions.tsv"
                                                                        ).read_text()
    mnli = make_glue_task("mnli", tmp_path / "mnli")
    for model, task, data, mode, message in [
            (tiny_bert, "sst2", data_dir, "slim", "needs a fine-tuned model with its task head"),
            (tmp_path / "run" / "model", "mnli", mnli, "slim", "has a 2-label head, the task 3 labels"),
            (tmp_path / "run" / "model", "sst2", data_dir, "earlybert", "use mode=slim, not mode=earlybert")]:
        code = finetune_main(["glue", "--config", GLUE_YAML, f"task={task}", f"model={model}", f"data_dir={data}",
                              f"mode={mode}", f"output_dir={tmp_path / 'refused'}", "eval_only=true"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "refused").exists()
