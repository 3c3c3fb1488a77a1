"""Every family end to end: tiny pretraining from its config, `draw`, `shrink`, `info`, fine-tuning in two modes."""

import json

import pytest
from transformers import AutoModelForMaskedLM

from earlybert.cli import main
from earlybert.recipes.finetune import main as finetune_main
from tests.conftest import REPO
from tests.task_fixtures import make_glue_task, make_squad, make_tiny_model

NEW_FAMILIES = ["electra", "xlm-roberta", "distilbert", "deberta-v2", "modernbert"]
SLIM_MLM = {"roberta": "SlimRobertaForMaskedLM", "electra": "SlimElectraForMaskedLM",
            "xlm-roberta": "SlimXLMRobertaForMaskedLM", "distilbert": "SlimDistilBertForMaskedLM",
            "deberta-v2": "SlimDebertaV2ForMaskedLM", "modernbert": "SlimModernBertForMaskedLM"}


@pytest.mark.parametrize("family", ["roberta", *NEW_FAMILIES])
def test_tiny_pretraining_fires_shrinks_and_trains_on(family, pydoc_corpus, tmp_path, capsys):
    from earlybert.config import config_from_cli
    from earlybert.recipes.pretrain import PretrainConfig, run

    run_dir = tmp_path / "run"
    config = f"configs/pretrain/tiny-{family}.yaml" if family in NEW_FAMILIES else "configs/pretrain/tiny.yaml"
    cfg = config_from_cli(PretrainConfig, ["--config", str(REPO / config), f"model.family={family}",
                                           f"output_dir={run_dir}", f"data.train_files=[{pydoc_corpus}]",
                                           f"data.cache_dir={tmp_path / 'cache'}", "checkpoint.every=100",
                                           "log.progress_bar=false"], "earlybert pretrain")
    summary = run(cfg)
    # A tiny random model's masks settle near the detector's threshold, and each fresh run trains its own
    # WordPiece (ties broken in hash order): across runs it fires anywhere from step 13 to exactly 40, or
    # draws at max_search_steps (40). Either way the ticket is drawn by then and slim training follows.
    assert summary["drawn_by"] in ("fired", "limit") and summary["fired"] == (summary["drawn_by"] == "fired")
    assert summary["stage"] == "slim" and summary["ticket_step"] <= 40 and summary["steps"] == 60
    assert sum(summary["slim"]["layer_heads"]) == 6 and summary["full"]["layer_heads"] == [4, 4]
    model = AutoModelForMaskedLM.from_pretrained(run_dir / "model")
    assert type(model).__name__ == SLIM_MLM[family] and model.config.layer_num_heads == [3, 3]

    capsys.readouterr()
    assert main(["info", str(run_dir / "model")]) == 0
    assert "heads kept 6/8" in capsys.readouterr().out


def finetune_glue(model, data_dir, mode, out, capsys) -> dict:
    """Fine-tune on the sst2 fixture for 2 epochs; the run's summary."""
    code = finetune_main(["glue", "--config", str(REPO / "configs/finetune/glue.yaml"), "task=sst2",
                          f"model={model}", f"data_dir={data_dir}", f"mode={mode}", f"output_dir={out}",
                          "epochs=2", "train.micro_batch_size=8", "search.check_every=1",
                          "search.max_search_steps=2", "search.window=2", "log.progress_bar=false"])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert set(json.loads((out / "eval_results.json").read_text())) == {"accuracy"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == mode
    return summary


@pytest.mark.parametrize("family", ["roberta", *NEW_FAMILIES])
def test_glue_fine_tuning_in_every_mode_with_draw_shrink_and_info(family, tmp_path, capsys):
    model = make_tiny_model(tmp_path / "model", family)
    data_dir = make_glue_task("sst2", tmp_path / "sst2")
    finetune_glue(model, data_dir, "full", tmp_path / "full", capsys)
    summary = finetune_glue(model, data_dir, "earlybert", tmp_path / "earlybert", capsys)
    assert summary["stage"] == "slim" and sum(summary["slim"]["layer_heads"]) < 8
    config = json.loads((tmp_path / "earlybert" / "model" / "config.json").read_text())
    assert config["model_type"] == f"slim_{family}" and len(config["layer_num_heads"]) == 2
    assert sum(finetune_glue(model, data_dir, "random", tmp_path / "random", capsys)["slim"]["layer_heads"]) < 8

    # `draw` another ticket from the search's saved coefficients, `shrink` the model with it, `info` the result,
    # and fine-tune that slim model (mode slim).
    capsys.readouterr()
    assert main(["draw", str(tmp_path / "earlybert"), "--heads-ratio", "0.5", "--ffn-ratio", "0.5",
                 "--output", str(tmp_path / "half.json")]) == 0
    assert json.loads((tmp_path / "half.json").read_text())["model_type"] == family
    assert main(["shrink", "--model", str(model), "--ticket", str(tmp_path / "half.json"),
                 "--output", str(tmp_path / "half")]) == 0
    assert main(["info", str(tmp_path / "half")]) == 0
    assert "heads kept 4/8, ffn kept " in capsys.readouterr().out
    widths = json.loads((tmp_path / "half" / "config.json").read_text())["layer_intermediate_sizes"]
    assert all(w % 8 == 0 for w in widths) and abs(sum(widths) - 48) <= 8  # half of 96, rounded per layer
    summary = finetune_glue(tmp_path / "half", data_dir, "slim", tmp_path / "slim", capsys)
    assert summary["full"]["layer_heads"] == [2, 2]


@pytest.mark.parametrize("family", ["roberta", *NEW_FAMILIES])
def test_squad_fine_tuning_with_a_search(family, tmp_path, capsys):
    model = make_tiny_model(tmp_path / "model", family)
    data_dir = make_squad(tmp_path / "squad")
    out = tmp_path / "out"
    code = finetune_main(["squad", "--config", str(REPO / "configs/finetune/squad.yaml"), "task=squad",
                          f"model={model}", f"data_dir={data_dir}", "mode=earlybert", f"output_dir={out}",
                          "epochs=2", "train.micro_batch_size=8", "search.check_every=1", "search.max_search_steps=2",
                          "search.window=2", "max_seq_len=48", "doc_stride=16", "log.progress_bar=false"])
    assert code == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "slim" and 0.0 <= summary["eval"]["exact_match"] <= summary["eval"]["f1"] <= 100.0
    assert len(json.loads((out / "predictions.json").read_text())) > 0
