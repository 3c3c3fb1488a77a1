"""`earlybert compare`: modes x seeds, its table, plot and report, resuming, and bad input."""

import json
import signal
import subprocess
import sys
import time

import pytest

from earlybert.recipes.compare import main as compare_main
from earlybert.recipes.compare import pareto
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


def test_two_modes_two_seeds_write_the_table_plot_and_report(task, tmp_path, capsys):
    from earlybert.report.html import write_report

    out = tmp_path / "cmp"
    assert compare_main(args(task, out, "compare.modes=[full,earlybert]", "compare.seeds=[3,4]",
                             "compare.weights=[rewind,continue]")) == 0
    data = json.loads((out / "comparison.json").read_text())
    order = ["full", "earlybert", "earlybert-continue"]  # rewind is glue.yaml's own: the plain name
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [(v, s) for s in (3, 4) for v in order]
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == order and all(r["runs"] == 2 for r in rows.values())
    runs = {(r["variant"], r["seed"]): r for r in data["runs"]}
    # 32 examples, batch 8, 2 epochs: 8 steps; the search draws at step 2; a rewound slim stage adds 8 steps.
    assert [runs[(v, 3)]["steps"] for v in order] == [8, 10, 8]
    assert [runs[(v, 3)]["weights"] for v in order] == [None, "rewind", "continue"]
    full_mean = (runs[("full", 3)]["train_time_s"] + runs[("full", 4)]["train_time_s"]) / 2
    eb_mean = (runs[("earlybert", 3)]["train_time_s"] + runs[("earlybert", 4)]["train_time_s"]) / 2
    assert rows["earlybert"]["time_saved"] == pytest.approx(1 - eb_mean / full_mean)
    assert rows["earlybert"]["params"] < rows["full"]["params"]
    for run in data["runs"]:  # each run folder is a real fine-tuning run with its own seed
        summary = json.loads((out / run["variant"] / f"seed{run['seed']}" / "summary.json").read_text())
        assert summary["eval"]["accuracy"] == run["value"]
    table = (out / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| variant | runs | accuracy mean") and len(table) == 5
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    html = write_report(out).read_text()
    assert "comparison.png" in html and "earlybert-continue" in html and "time saved" in html


def test_pareto_front_keeps_only_undominated_points():
    points = [(10.0, 0.9), (5.0, 0.8), (7.0, 0.7), (12.0, 0.95), (11.0, 0.85)]
    assert pareto(points) == [(5.0, 0.8), (10.0, 0.9), (12.0, 0.95)]


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
    (["compare.modes=[full,prune]"], "compare.modes has prune: use some of full, earlybert, random, slim"),
    (["compare.seeds=[]"], "compare.seeds is empty"),
    (["compare.weights=[restart]"], "compare.weights has restart: use rewind or continue"),
    (["data_dir=/nonexistent/sst2"], "task data /nonexistent/sst2 is missing"),
])
def test_bad_input_is_one_line_and_creates_nothing(task, tmp_path, capsys, extra, message):
    out = tmp_path / "cmp"
    assert compare_main(args(task, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("earlybert compare: error: ") and message in err[0]
    assert not out.exists()
