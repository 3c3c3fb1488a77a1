"""`earlybert compare`: modes x seeds, its table, plot and report, resuming, and bad input."""

import json
import signal
import subprocess
import sys
import time

import pytest

from earlybert.recipes.compare import main as compare_main
from earlybert.recipes.compare import pareto
from earlybert.ticket.ticket import Ticket
from tests.conftest import REPO, clean_env
from tests.task_fixtures import make_glue_task, make_tiny_bert

GLUE_YAML = str(REPO / "configs/finetune/glue.yaml")
FAST = ["task=sst2", "epochs=2", "train.micro_batch_size=8", "train.lr=1e-3", "search.check_every=1",
        "search.max_search_steps=2", "search.window=2", "eval_batch_size=16"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return make_tiny_bert(root / "bert"), make_glue_task("sst2", root / "sst2", n_train=32)


def args(task, out, *extra):
    model, data = task
    return ["--config", GLUE_YAML, f"model={model}", f"data_dir={data}", *FAST, f"compare.output_dir={out}", *extra]


@pytest.mark.slow
def test_two_modes_two_seeds_write_the_table_plot_and_report(task, tmp_path, capsys):
    from earlybert.report.html import write_report

    out = tmp_path / "cmp"
    assert compare_main(args(task, out, "compare.modes=[full,earlybert]", "compare.seeds=[3,4]",
                             "compare.weights=[continue,rewind]")) == 0
    data = json.loads((out / "comparison.json").read_text())
    order = ["full", "earlybert", "earlybert-rewind"]  # continue is glue.yaml's own: the plain name
    # The second seed starts one place further on: full does not always run first.
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [
        ("full", 3), ("earlybert", 3), ("earlybert-rewind", 3),
        ("earlybert", 4), ("earlybert-rewind", 4), ("full", 4)]
    assert "compare: warm-up (10 untimed steps)" in capsys.readouterr().out
    assert not (out / "warmup").exists()
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == order and all(r["runs"] == 2 for r in rows.values())
    runs = {(r["variant"], r["seed"]): r for r in data["runs"]}
    # 32 examples, batch 8, 2 epochs: 8 steps; the search draws at step 2; a rewound slim stage adds 8 steps.
    assert [runs[(v, 3)]["steps"] for v in order] == [8, 8, 10]
    assert [runs[(v, 3)]["weights"] for v in order] == [None, "continue", "rewind"]
    assert rows["earlybert"]["params"] < rows["full"]["params"]
    for run in data["runs"]:  # each run folder is a real fine-tuning run with its own seed
        summary = json.loads((out / run["variant"] / f"seed{run['seed']}" / "summary.json").read_text())
        assert summary["eval"]["accuracy"] == run["value"]
    table = (out / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| variant | runs | accuracy mean") and len(table) == 5
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    html = write_report(out).read_text()
    assert "comparison.png" in html and "earlybert-rewind" in html and "time saved" in html


def test_time_saved_is_against_the_mean_full_run_and_sizes_are_means_per_variant():
    from earlybert.recipes.compare import aggregate

    def run(variant, mode, seconds, params):
        return {"variant": variant, "mode": mode, "ratios": None, "metric": "accuracy", "value": 0.5,
                "train_time_s": seconds, "params": params, "flops_per_token": 10 * params}

    rows = {r["variant"]: r for r in aggregate([run("full", "full", 100, 90), run("full", "full", 110, 90),
                                                run("random", "random", 60, 50), run("random", "random", 70, 54)])}
    assert rows["random"]["time_saved"] == pytest.approx(0.380952, abs=1e-6)  # 1 - 65 / 105
    assert rows["full"]["time_saved"] == pytest.approx(-0.0, abs=1e-12)
    assert (rows["random"]["params"], rows["random"]["flops_per_token"]) == (52, 520)


def test_the_table_shows_the_worst_seed_and_counts_collapse_warnings():
    from earlybert.recipes.compare import aggregate, markdown

    def run(mode, value, judged=None, collapsed=False):
        check = None if judged is None else {"judged": judged, "collapsed": collapsed}
        return {"variant": mode, "mode": mode, "ratios": None, "metric": "accuracy", "value": value,
                "train_time_s": 10.0, "params": 5, "flops_per_token": 50, "draw_check": check}

    rows = aggregate([run("full", 0.9), run("full", 0.8), run("earlybert", 0.85, True),
                      run("earlybert", 0.55, True, collapsed=True), run("earlybert", 0.65, False)])
    table = markdown(rows).splitlines()
    assert table[0].split(" | ")[4:5] == ["worst"] and table[0].endswith("collapse warnings |")
    assert table[2].startswith("| full | 2 | 85.00 |") and "| 80.00 |" in table[2] and table[2].endswith("| - |")
    assert "| 55.00 |" in table[3] and table[3].endswith("| 1/3 (1 not judged) |")


def test_run_order_rotates_the_first_mode_and_keeps_random_after_its_learned_ticket():
    from earlybert.recipes.compare import CompareConfig, run_order, variants

    chosen = variants(CompareConfig(modes=["full", "earlybert", "random"], seeds=[1, 2, 3, 4]))
    order = [(v.name, s) for v, s in run_order(chosen, [1, 2, 3, 4])]
    firsts = [next(name for name, s in order if s == seed) for seed in (1, 2, 3, 4)]
    assert firsts == ["full", "earlybert", "full", "earlybert"]  # random follows the ticket it copies
    for seed in (1, 2, 3, 4):
        names = [name for name, s in order if s == seed]
        assert sorted(names) == ["earlybert", "full", "random"]
        assert names.index("random") > names.index("earlybert")


@pytest.mark.slow
def test_a_random_ticket_in_a_comparison_has_the_learned_tickets_sizes(task, tmp_path):
    out = tmp_path / "cmp"
    assert compare_main(args(task, out, "compare.modes=[earlybert,random]", "compare.seeds=[5]",
                             "compare.warmup_steps=0", "search.heads_ratio=0.5", "search.ffn_ratio=0.3")) == 0
    learned = Ticket.load(out / "earlybert" / "seed5" / "ticket.json")
    drawn = Ticket.load(out / "random" / "seed5" / "ticket.json")
    assert [sum(h) for h in drawn.heads] == [sum(h) for h in learned.heads]
    assert sum(map(sum, drawn.ffn)) == sum(map(sum, learned.ffn))
    assert (drawn.heads, drawn.ffn) != (learned.heads, learned.ffn)
    runs = {r["variant"]: r for r in json.loads((out / "comparison.json").read_text())["runs"]}
    assert runs["random"]["params"] == runs["earlybert"]["params"]


def test_pareto_front_keeps_only_undominated_points():
    points = [(10.0, 0.9), (5.0, 0.8), (7.0, 0.7), (12.0, 0.95), (11.0, 0.85)]
    assert pareto(points) == [(5.0, 0.8), (10.0, 0.9), (12.0, 0.95)]


@pytest.mark.slow
def test_a_killed_comparison_resumes_without_redoing_finished_runs(task, tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "earlybert", "compare",
           *args(task, out, "compare.modes=[full,random]", "compare.seeds=[1,2]")]
    env = clean_env()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "random" / "seed1" / "metrics.jsonl"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not second.is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "comparison.json").exists()
    first = out / "full" / "seed1" / "summary.json"
    stamp = first.stat().st_mtime_ns
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "full seed 1 already finished: skipped" in done.stdout
    assert first.stat().st_mtime_ns == stamp
    assert len(json.loads((out / "comparison.json").read_text())["runs"]) == 4


@pytest.mark.parametrize(("extra", "message"), [
    (["compare.modes=[full,prune]"], "compare.modes='prune' is unknown: use one of full, earlybert, random, slim"),
    (["compare.seeds=[]"], "compare.seeds is empty"),
    (["compare.weights=[restart]"], "compare.weights='restart' is unknown: use one of rewind, continue"),
    (["data_dir=/nonexistent/sst2"], "data_dir='/nonexistent/sst2' does not exist: give an existing folder"),
])
def test_bad_input_is_one_line_and_creates_nothing(task, tmp_path, capsys, extra, message):
    out = tmp_path / "cmp"
    assert compare_main(args(task, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("earlybert compare: error: ") and message in err[0]
    assert not out.exists()
