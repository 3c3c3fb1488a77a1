"""Whole pretraining runs on CPU with the tiny config: search, early bird, shrink, slim training, resume."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

from earlybert.ticket.ticket import Ticket
from tests.conftest import REPO, UninterruptedRuns, clean_env, kill_at_step, run_earlybert, torchrun

pytestmark = pytest.mark.slow  # integration runs: `make test` runs them, `make test-fast` does not

TINY = str(REPO / "configs/pretrain/tiny.yaml")


def tiny_args(run_dir: Path, corpus: Path, cache: Path, *extra: str) -> list[str]:
    return ["--config", TINY, f"output_dir={run_dir}", f"data.train_files={corpus}", f"data.cache_dir={cache}",
            *extra]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, pydoc_corpus) -> Path:
    """One uninterrupted tiny run, shared by the checks below."""
    root = tmp_path_factory.mktemp("pretrain")
    result = run_earlybert("pretrain", *tiny_args(root / "run", pydoc_corpus, root / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def uninterrupted(baseline, pydoc_corpus) -> UninterruptedRuns:
    """The baseline, and more uninterrupted runs on demand: each prepares the corpus into a cache of its own (with
    the baseline's vocabulary: WordPiece training breaks ties in hash order), as the baseline did, so a difference
    between preparing the corpus and reading it would still fail."""
    def rerun(n: int) -> Path:
        cache = baseline.parent / f"cache-{n}"
        for trained in (baseline.parent / "cache").glob("tokenizer-*"):
            shutil.copytree(trained, cache / trained.name)
        result = run_earlybert("pretrain", *tiny_args(baseline.parent / f"run-{n}", pydoc_corpus, cache))
        assert result.returncode == 0, result.stderr[-3000:]
        return baseline.parent / f"run-{n}"

    return UninterruptedRuns(baseline, rerun)


def test_search_fires_shrinks_trains_on_and_saves_a_loadable_slim_model(baseline):
    summary = json.loads((baseline / "summary.json").read_text())
    # drawn by the detector or at max_search_steps (40): a tiny model's masks settle near the threshold
    assert summary["drawn_by"] in ("fired", "limit") and summary["ticket_step"] <= 40
    assert summary["deepspeed"]["given"] == "auto" and summary["deepspeed"]["precision"] == "fp32 ZeRO-0"
    assert json.loads(Path(summary["deepspeed"]["file"]).read_text())["zero_optimization"] == {"stage": 0}
    assert summary["stage"] == "slim" and summary["steps"] == 60
    assert summary["steps_in"]["search"] == summary["ticket_step"]
    assert summary["steps_in"]["slim"] == 60 - summary["ticket_step"]
    for key in ("search", "shrink", "slim"):
        assert summary["time_s"][key] > 0
    assert summary["tokens"] == 60 * 8 * 64
    assert summary["slim"]["params"] < summary["full"]["params"]
    assert summary["slim"]["train_flops_per_token"] < summary["full"]["train_flops_per_token"]

    ticket = Ticket.load(baseline / "ticket.json")
    assert ticket.layer_heads() == [3, 3]  # 1/4 of 4 heads pruned per layer
    assert sum(ticket.layer_ffn()) == 256 - round(0.4 * 256)  # tiny.yaml: ffn_round_to 1
    assert ticket.metadata["step"] == summary["ticket_step"] and ticket.metadata["distance_history"]

    rows = metrics(baseline)
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 0.3, (first, last)
    assert {r["stage"] for r in rows} == {"search", "slim"}

    import earlybert  # noqa: F401

    model = AutoModelForMaskedLM.from_pretrained(baseline / "model")
    assert type(model).__name__ == "SlimBertForMaskedLM"
    assert model.config.layer_num_heads == [3, 3]
    assert (baseline / "model" / "tokenizer.json").is_file()


def test_draw_makes_other_tickets_from_the_saved_search(baseline, tmp_path):
    result = run_earlybert("draw", str(baseline), "--heads-ratio", "0.5", "--ffn-ratio", "0.5",
                           "--output", str(tmp_path / "t.json"))
    assert result.returncode == 0, result.stderr
    ticket = Ticket.load(tmp_path / "t.json")
    assert ticket.layer_heads() == [2, 2] and sum(ticket.layer_ffn()) == 128
    assert ticket.metadata["step"] == json.loads((baseline / "summary.json").read_text())["ticket_step"]
    # Same ratios as the run: the same masks as the ticket it drew.
    run_earlybert("draw", str(baseline), "--heads-ratio", "0.25", "--ffn-ratio", "0.4", "--output",
                  str(tmp_path / "same.json"))
    same, drawn = Ticket.load(tmp_path / "same.json"), Ticket.load(baseline / "ticket.json")
    assert (same.heads, same.ffn) == (drawn.heads, drawn.ffn)


def test_draw_at_the_runs_ratios_reproduces_a_rounded_ticket(pydoc_corpus, tmp_path):
    run = tmp_path / "run"
    result = run_earlybert("pretrain", *tiny_args(run, pydoc_corpus, tmp_path / "cache", "search.ffn_round_to=64",
                                                  "search.ffn_scope=layer", "train.max_steps=30",
                                                  "search.max_search_steps=12", "search.check_every=3"))
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = Ticket.load(run / "ticket.json")
    assert all(k % 64 == 0 for k in drawn.layer_ffn())
    again = run_earlybert("draw", str(run), "--heads-ratio", "0.25", "--ffn-ratio", "0.4", "--output",
                          str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr[-3000:]
    redrawn = Ticket.load(tmp_path / "again.json")
    assert (redrawn.heads, redrawn.ffn) == (drawn.heads, drawn.ffn)
    assert redrawn.metadata["ffn_round_to"] == 64 and redrawn.metadata["step"] == drawn.metadata["step"]


@pytest.mark.parametrize("when", ["search", "right after the shrink", "slim"])
def test_sigkill_then_resume_auto_ends_with_identical_weights(baseline, uninterrupted, pydoc_corpus, tmp_path, when):
    drawn = json.loads((baseline / "summary.json").read_text())["ticket_step"]
    kill_step = {"search": 6, "right after the shrink": drawn + 1, "slim": 45}[when]
    run_dir = tmp_path / "run"
    # In the search case, checkpoints every 5 steps leave 15 steps of margin before the draw (step 21).
    extra = ["checkpoint.every=5"] if when == "search" else []
    args = tiny_args(run_dir, pydoc_corpus, baseline.parent / "cache", *extra)
    kill_at_step(["pretrain", *args], run_dir, kill_step)
    latest = (run_dir / "checkpoints" / "latest").read_text()
    state = json.loads((run_dir / "checkpoints" / latest / "trainer_state.json").read_text())
    assert state["stage"] == ("search" if when == "search" else "slim") and state["step"] < kill_step
    if when == "right after the shrink":
        assert state["step"] == drawn  # the checkpoint written right after the shrink
    result = run_earlybert("pretrain", *args, "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"training from step {state['step']}" in result.stdout
    uninterrupted.assert_matches(run_dir)
    assert Ticket.load(run_dir / "ticket.json").heads == Ticket.load(baseline / "ticket.json").heads


def test_two_ranks_and_one_rank_draw_the_same_ticket(pydoc_corpus, tmp_path):
    no_dropout = ["model.hidden_dropout=0", "model.attention_dropout=0", "train.max_steps=40",
                  "search.max_search_steps=30",
                  "checkpoint.every=100"]
    one = tiny_args(tmp_path / "one", pydoc_corpus, tmp_path / "cache", *no_dropout)
    two = tiny_args(tmp_path / "two", pydoc_corpus, tmp_path / "cache", *no_dropout, "train.micro_batch_size=4")
    result = run_earlybert("pretrain", *one)
    assert result.returncode == 0, result.stderr[-3000:]
    result = torchrun("pretrain/run_pretrain.py", *two)
    assert result.returncode == 0, result.stderr[-3000:]
    from earlybert.ticket.draw import coefficient_files, draw_from_run

    t1, t2 = Ticket.load(tmp_path / "one" / "ticket.json"), Ticket.load(tmp_path / "two" / "ticket.json")
    # The coefficients agree at every check (summation order differs between 4+4 and 8 rows: float noise) ...
    drawn = min(t1.metadata["step"], t2.metadata["step"])
    files1, files2 = coefficient_files(tmp_path / "one"), coefficient_files(tmp_path / "two")
    for step in (s for s in files1 if s <= drawn):
        a, b = load_file(str(files1[step])), load_file(str(files2[step]))
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=f"{name} at step {step}")
    # ... so do the masks drawn from them at every check (the run's own ratios, 0.25 and 0.4), up to a unit whose
    # coefficients sit within that noise of the cut. The detector is a function of those masks and of the tie flag
    # (equal scores at the cut): where both agree at every check it fires at the same step. Either can differ by
    # float noise: one flipped head moves a tiny model's head distance by 1/8, across the 0.1 threshold, and the
    # coefficients near 1.0 sit a few float32 ulps apart at the cut, so noise can make or break an exact tie, which
    # holds the detector for a window (CI saw 26 against 29, the masks equal at every check).
    history1, history2 = (
        {c["step"]: c["tied"] for c in t.metadata["distance_history"] if c["step"] <= drawn} for t in (t1, t2))
    assert history1.keys() == history2.keys() and drawn in history1
    masks_agree = history1 == history2
    for step in (s for s in files1 if s <= drawn):
        d1 = draw_from_run(tmp_path / "one", 0.25, 0.4, tmp_path / f"d1-{step}.json", step=step)
        d2 = draw_from_run(tmp_path / "two", 0.25, 0.4, tmp_path / f"d2-{step}.json", step=step)
        flipped = [sum(a != b for a, b in zip(x, y)) for x, y in zip(d1.heads + d1.ffn, d2.heads + d2.ffn)]
        assert sum(flipped) <= 2, f"masks at step {step} differ in {sum(flipped)} units"
        masks_agree = masks_agree and not any(flipped)
    if masks_agree:
        assert t1.metadata["step"] == t2.metadata["step"] and (t1.heads, t1.ffn) == (t2.heads, t2.ffn), (
            t1.metadata["distance_history"], t2.metadata["distance_history"])
    l1 = [r["loss"] for r in metrics(tmp_path / "one") if r.get("step", 0) <= drawn]
    l2 = [r["loss"] for r in metrics(tmp_path / "two") if r.get("step", 0) <= drawn]
    assert l1 and l1 == pytest.approx(l2, rel=1e-4)


def test_rewind_in_pretraining_ends_with_a_slim_model_trained_from_the_initial_weights(pydoc_corpus, tmp_path):
    result = run_earlybert("pretrain", *tiny_args(tmp_path / "run", pydoc_corpus, tmp_path / "cache",
                                                  "search.weights=rewind", "search.rewind_length=0.5"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage"] == "slim" and summary["weights"] == "rewind"
    assert summary["steps"] == summary["ticket_step"] + 30  # the slim stage: half the run's 60 steps
    assert summary["slim"]["params"] < summary["full"]["params"]
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "run" / "model")
    assert type(reloaded).__name__ == "SlimBertForMaskedLM"
    assert sum(p.numel() for p in reloaded.parameters()) == summary["slim"]["params"]
    refused = run_earlybert("pretrain", *tiny_args(tmp_path / "longer", pydoc_corpus, tmp_path / "cache",
                                                   "search.weights=rewind", "search.rewind_length=2"))
    assert refused.returncode == 2 and not (tmp_path / "longer").exists()
    assert refused.stderr.strip().splitlines() == [
        "earlybert pretrain: error: search.rewind_length=2 makes the rewound slim stage longer than the 60 steps of "
        "data the run's phases hold: use search.rewind_length <= 1"]


def test_phases_switch_sequence_length_and_batch(pydoc_corpus, tmp_path):
    phases = "phases=[{steps: 3, seq_len: 32, micro_batch_size: 8}, {steps: 2, seq_len: 64, micro_batch_size: 2}]"
    result = run_earlybert("pretrain", *tiny_args(tmp_path / "run", pydoc_corpus, tmp_path / "cache",
                                                  "train.max_steps=5", "search.enabled=false", phases))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["tokens"] for r in metrics(tmp_path / "run")] == [256, 256, 256, 128, 128]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage"] == "full" and summary["tokens"] == 3 * 256 + 2 * 128 and summary["ticket_step"] is None
    assert "blocks of 32 tokens" in result.stdout and "blocks of 64 tokens" in result.stdout


@pytest.mark.parametrize("backend, produced", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_logging_backends_write_locally(pydoc_corpus, tmp_path, backend, produced):
    result = run_earlybert("pretrain", *tiny_args(tmp_path / "run", pydoc_corpus, tmp_path / "cache",
                                                  "train.max_steps=3", "search.enabled=false",
                                                  f"log.report_to={backend}"),
                           env={"WANDB_MODE": "", "WANDB_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert any((tmp_path / "run" / produced).rglob("*")), list((tmp_path / "run").iterdir())
    assert len(metrics(tmp_path / "run")) == 3


def test_streaming_a_datasets_source(tmp_path, pydoc_corpus):
    docs = [d for d in pydoc_corpus.read_text().split("\n\n") if d.strip()][:200]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    result = run_earlybert("pretrain", "--config", TINY, f"output_dir={tmp_path / 'run'}",
                           f"data.dataset={tmp_path / 'docs.jsonl'}", "data.streaming=true",
                           f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=4", "search.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "blocks of 64 tokens streamed from" in result.stdout
    assert len(metrics(tmp_path / "run")) == 4


def test_next_sentence_prediction_run_saves_a_pretraining_model(pydoc_corpus, tmp_path):
    from transformers import AutoModelForPreTraining

    result = run_earlybert("pretrain", *tiny_args(tmp_path / "run", pydoc_corpus, tmp_path / "cache",
                                                  "data.nsp=true", "train.max_steps=6", "search.max_search_steps=3"))
    assert result.returncode == 0, result.stderr[-3000:]
    import earlybert  # noqa: F401

    model = AutoModelForPreTraining.from_pretrained(tmp_path / "run" / "model")
    assert type(model).__name__ == "SlimBertForPreTraining" and model.config.layer_num_heads == [3, 3]
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "run" / "model")).__name__ == "SlimBertForMaskedLM"
    bad = run_earlybert("pretrain", *tiny_args(tmp_path / "rob", pydoc_corpus, tmp_path / "cache", "data.nsp=true",
                                               "model.family=roberta"))
    assert bad.returncode == 2 and "data.nsp=true needs a BERT model" in bad.stderr


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(baseline, uninterrupted, pydoc_corpus, tmp_path):
    """Kill the run the moment a checkpoint's temporary folder appears; resume ignores it with a warning."""
    for attempt in range(3):  # a kill can land just after the write's final rename: then try again
        run_dir = tmp_path / f"run-{attempt}"
        args = tiny_args(run_dir, pydoc_corpus, baseline.parent / "cache", "checkpoint.every=1")
        if kill_mid_checkpoint_write(run_dir, args):
            break
    assert list((run_dir / "checkpoints").glob(".tmp-step_*")), "no kill landed mid-write in 3 runs"
    result = run_earlybert("pretrain", *args, "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ignoring the partial checkpoint" in result.stderr
    uninterrupted.assert_matches(run_dir)


def kill_mid_checkpoint_write(run_dir: Path, args: list[str]) -> bool:
    """SIGKILL a pretraining run once a checkpoint is being written after an earlier one is done; whether the
    half-written folder is left behind."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "earlybert", "pretrain", *args], cwd=REPO, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, partial = time.time() + 300, []
    while proc.poll() is None and time.time() < deadline:
        partial = list((run_dir / "checkpoints").glob(".tmp-step_*")) if (run_dir / "checkpoints").is_dir() else []
        if partial and any((run_dir / "checkpoints").glob("step_*")):  # mid-write, with an earlier one done
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and partial
    return bool(list((run_dir / "checkpoints").glob(".tmp-step_*")))


def bf16_zero_json(folder: Path, stage: int) -> Path:
    """The shipped bf16 ZeRO config of `stage`, with every parameter partitioned (a tiny model's would all stay
    whole under ZeRO-3's default persistence threshold, skipping the gather paths)."""
    shipped = json.loads((REPO / f"configs/deepspeed/zero{stage}_bf16.json").read_text())
    shipped["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = folder / f"zero{stage}_bf16.json"
    path.write_text(json.dumps(shipped))
    return path


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_bf16_zero_search_shrink_sigkill_resume_ends_with_identical_weights(pydoc_corpus, tmp_path, stage):
    def args(name: str) -> list[str]:
        return tiny_args(tmp_path / name, pydoc_corpus, tmp_path / "cache", "train.micro_batch_size=4",
                         f"train.deepspeed_config={bf16_zero_json(tmp_path, stage)}", "train.max_steps=40",
                         "search.max_search_steps=25", "search.threshold=0.2", "checkpoint.every=5")

    whole = torchrun("pretrain/run_pretrain.py", *args("whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "identical on all 2 ranks" in whole.stdout  # the slim shapes each rank built, compared
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["stage"] == "slim" and summary["optimizer_state_at_shrink"] == "carried"
    drawn = summary["ticket_step"]
    # drawn by the detector or at the limit by step 25: slim checkpoints (every 5 steps) come before the kill
    assert summary["drawn_by"] in ("fired", "limit") and drawn <= 25, drawn
    kill_at_step(["pretrain/run_pretrain.py", *args("killed")], tmp_path / "killed", drawn + 8,
                 launcher=[str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"])
    resumed = torchrun("pretrain/run_pretrain.py", *args("killed"), "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training from step" in resumed.stdout and "stage slim" in resumed.stdout
    # Same ranks, same reductions, fp32 masters and moments restored from the checkpoint: bit-identical.
    def rerun(n: int) -> Path:
        again = torchrun("pretrain/run_pretrain.py", *args(f"whole-{n}"))
        assert again.returncode == 0, again.stderr[-3000:]
        return tmp_path / f"whole-{n}"

    whole_dir = UninterruptedRuns(tmp_path / "whole", rerun).assert_matches(tmp_path / "killed")
    killed, whole = Ticket.load(tmp_path / "killed" / "ticket.json"), Ticket.load(whole_dir / "ticket.json")
    assert (killed.heads, killed.ffn) == (whole.heads, whole.ffn)


def test_resuming_on_a_changed_corpus_is_refused_before_anything_is_written(pydoc_corpus, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(pydoc_corpus.read_text())
    args = tiny_args(tmp_path / "run", corpus, tmp_path / "cache", "train.max_steps=4", "search.enabled=false",
                     "checkpoint.every=2")
    first = run_earlybert("pretrain", *args, "train.max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "data: prepared 400 documents" in first.stdout
    again = run_earlybert("pretrain", *args, "overwrite=true")  # same corpus: prepared once, found again
    assert "no tokenization" in again.stdout and "data: prepared" not in again.stdout
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    corpus.write_text(pydoc_corpus.read_text() + "\n\nA document added after the run started.")
    resumed = run_earlybert("pretrain", *args, "resume=auto", "train.max_steps=6")
    assert resumed.returncode == 2 and resumed.stderr.count("\n") == 1, resumed.stderr
    assert "the corpus changed since" in resumed.stderr and "resume with the same data.train_files" in resumed.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
