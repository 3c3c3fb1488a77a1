"""`earlybert compare` with a pretraining config: full / earlybert / random / one-shot runs at equal steps."""

import json
from pathlib import Path

import pytest

from earlybert.recipes.compare import is_pretraining
from earlybert.recipes.compare import main as compare_main
from earlybert.recipes.compare_pretrain import PretrainCompareConfig, aggregate, chosen_variants, markdown, run_config
from earlybert.ticket.ticket import Ticket
from tests.conftest import REPO, SHARED

SMOLLM2 = str(REPO / "configs/pretrain/smollm2-135m.yaml")
TINY = str(REPO / "configs/pretrain/tiny.yaml")
HELD_OUT = SHARED / "data" / "corpus" / "sotu.txt.gz"


def tiny_decoder(model: Path, corpus: Path, cache: Path) -> list[str]:
    """The shipped SmolLM2 config on the tiny Llama: 24 steps of 4 x 32 tokens, search over the first 12."""
    return ["--config", SMOLLM2, f"model.init_from={model}", "model.gguf_file=", f"data.train_files={corpus}",
            f"data.cache_dir={cache}", "data.seq_len=32", "train.max_steps=24", "train.micro_batch_size=4",
            "train.lr=0.003", "train.warmup_steps=2", "search.check_every=1", "search.max_search_steps=12",
            "search.ffn_round_to=8", "search.lambda_heads=0.001", "search.lambda_ffn=0.001", "checkpoint.every=24",
            "log.every=1"]


@pytest.mark.parametrize("config, overrides, expected", [
    (SMOLLM2, [], True), (TINY, [], True), (str(REPO / "configs/finetune/bbc-topic.yaml"), [], False),
    (None, ["model=DIR", "task=sst2"], False), (None, ["model.init_from=DIR"], True),
    (str(REPO / "configs/finetune/glue.yaml"), ["distill.alpha=0.5"], False), (None, ["data.seq_len=64"], True)])
def test_pretraining_configs_are_told_from_fine_tuning_ones(config, overrides, expected):
    assert is_pretraining(config, overrides) is expected


def test_only_searched_runs_distill_and_step0_tickets_are_given_to_the_others(tmp_path):
    cmp = PretrainCompareConfig(modes=["full", "earlybert", "random", "wanda"], ratios=[[0.5, 0.25]])
    names = [v.name for v in chosen_variants(cmp)]
    assert names == ["full", "earlybert-h0.5-f0.25", "random-h0.5-f0.25", "wanda-h0.5-f0.25"]
    full, searched, random, wanda = chosen_variants(cmp)
    base = ["distill.alpha=0.5"]
    cfg = run_config(SMOLLM2, base, searched, 2, tmp_path / "e")
    assert cfg.search.enabled and cfg.distill.alpha == 0.5 and cfg.seed == 2 and cfg.search.heads_ratio == 0.5
    cfg = run_config(SMOLLM2, base, wanda, 2, tmp_path / "w", tmp_path / "t.json")
    assert not cfg.search.enabled and cfg.distill.alpha == 0 and cfg.search.ticket == str(tmp_path / "t.json")
    assert not run_config(SMOLLM2, base, full, 1, tmp_path / "f").search.ticket


def test_time_saved_is_against_the_mean_full_run_and_a_step0_tickets_seconds_stand_apart():
    def run(variant, seed, time_s, ppl, step=None):
        return {"variant": variant, "mode": variant, "ratios": None, "seed": seed, "final_loss": 3.0,
                "heldout_perplexity": ppl, "heldout_loss": None, "train_time_s": time_s,
                "ticket_s": 30.0 if variant == "wanda" else 0.0, "ticket_step": step, "drawn_by": None, "steps": 10,
                "params": 100_000_000 if variant == "full" else 60_000_000, "flops_per_token": 10}

    rows = aggregate([run("full", 1, 100.0, 50.0), run("full", 2, 110.0, 52.0), run("earlybert", 1, 63.0, 60.0, 12),
                      run("earlybert", 2, 84.0, 70.0, 15), run("wanda", 1, 72.0, 40.0)])
    by = {r["variant"]: r for r in rows}
    assert by["earlybert"]["time_saved"] == pytest.approx(1 - 73.5 / 105.0)
    assert by["earlybert"]["perplexity"] == pytest.approx(65.0)
    assert by["earlybert"]["perplexity_std"] == pytest.approx(7.0711, 1e-4)
    assert by["wanda"]["time_saved"] == pytest.approx(1 - 72.0 / 105.0) and by["wanda"]["ticket_s"] == 30.0
    text = markdown(rows)
    assert "| earlybert | 2 | 65.00 ± 7.07 | 3.000 ± 0.000 | 73.5 ± 14.8 | 30.0% | 0.0 | 12, 15 | 60,000,000 |" in text
    assert "| wanda | 1 | 40.00 ± 0.00 | 3.000 ± 0.000 | 72.0 ± 0.0 | 31.4% | 30.0 | - |" in text


@pytest.mark.slow
def test_a_decoder_comparison_writes_perplexities_and_resumes(tiny_llama, pydoc_corpus, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [*tiny_decoder(tiny_llama, pydoc_corpus, tmp_path / "cache"), f"compare.output_dir={out}",
            "compare.modes=[full,earlybert,random,wanda]", "compare.seeds=[1]", f"compare.heldout={HELD_OUT}",
            "compare.heldout_blocks=8", "compare.calibration_blocks=4", "compare.warmup_steps=2"]
    assert compare_main(args) == 0, capsys.readouterr().err[-3000:]
    data = json.loads((out / "comparison.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == ["full", "earlybert", "random", "wanda"] and data["kind"] == "pretraining"
    assert all(1 < r["perplexity"] < 512 for r in rows.values())  # better than uniform over the 512 tokens
    assert rows["full"]["params"] > rows["earlybert"]["params"] == rows["random"]["params"] == rows["wanda"]["params"]
    assert rows["earlybert"]["ticket_steps"][0] <= 12 and rows["wanda"]["ticket_s"] > 0
    learned, random = Ticket.load(out / "earlybert" / "seed1" / "ticket.json"), Ticket.load(
        out / "tickets" / "random-seed1.json")
    assert random.layer_heads() == learned.layer_heads() and random.heads != learned.heads
    assert Ticket.load(out / "tickets" / "wanda-seed1.json").metadata["oneshot"] == "wanda"
    assert (out / "comparison.png").stat().st_size > 0 and "held-out perplexity" in (out / "comparison.md").read_text()
    capsys.readouterr()
    assert compare_main(args) == 0  # finished runs are skipped: the same table again
    assert capsys.readouterr().out.count("already finished: skipped") == 4
    again = {r["variant"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert again["wanda"]["perplexity"] == rows["wanda"]["perplexity"]


@pytest.mark.parametrize("extra, message", [
    (["compare.modes=[full,wanda]"], "score a pretrained model's weights: set model.init_from"),
    (["compare.heldout=HELD"], "compare.heldout scores a causal LM's perplexity"),
    (["compare.modes=[full,slim]"], "compare.modes"),
    (["compare.heldout_blocks=0"], "compare.heldout_blocks"),
])
def test_bad_pretraining_comparisons_are_one_line_and_create_nothing(pydoc_corpus, tmp_path, capsys, extra, message):
    out = tmp_path / "cmp"
    extra = [e.replace("HELD", str(HELD_OUT)) for e in extra]
    code = compare_main(["--config", TINY, f"compare.output_dir={out}", f"data.train_files={pydoc_corpus}", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()
