"""`earlybert finetune ... mode=dsee` end to end on a tiny BERT: updates, the pruning step, a plain saved model."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from earlybert.recipes.finetune import main as finetune_main
from tests.conftest import REPO, random_inputs
from tests.task_fixtures import make_glue_task, make_tiny_bert, make_tiny_model

DSEE_YAML = str(REPO / "configs/finetune/dsee.yaml")
FAST = ["epochs=2", "train.micro_batch_size=8", "eval_batch_size=16", "log.progress_bar=false", "dsee.rank=4",
        "dsee.sparse_entries=16"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsee")
    return {"model": make_tiny_bert(root / "tiny"), "data": make_glue_task("sst2", root / "sst2")}


def dsee(inputs, out: Path, capsys, *extra: str) -> dict:
    code = finetune_main(["glue", "--config", DSEE_YAML, f"model={inputs['model']}", f"data_dir={inputs['data']}",
                          f"output_dir={out}", *FAST, *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_structured_dsee_trains_few_parameters_removes_a_quarter_of_the_heads_and_saves_a_plain_model(
        inputs, tmp_path, capsys):
    summary = dsee(inputs, tmp_path / "run", capsys)
    record = summary["dsee"]
    # 4 targets of 32 x 32 with rank 4 and 16 sparse entries, plus the 2-class head (32 x 2 + 2).
    assert record["trainable_params"] == 4 * (4 * 64 + 16) + 66 and record["targets"] == 4
    assert record["trainable_share"] == pytest.approx(record["trainable_params"] / summary["full"]["params"])
    assert (record["heads_removed"], record["heads"]) == (2, 8)
    assert summary["slim"]["layer_heads"] == [3, 3] and summary["slim"]["params"] < summary["full"]["params"]
    assert set(summary["time_s"]) == {"dsee", "retrain"} and summary["train_time_s"] == pytest.approx(
        sum(summary["time_s"].values()))
    assert json.loads((tmp_path / "run" / "ticket.json").read_text())["heads"][0].count(0) == 1
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert not any("parametrizations" in k or "lora" in k for k in weights)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    x = random_inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, again(**x).logits)
    assert set(json.loads((tmp_path / "run" / "eval_results.json").read_text())) == {"accuracy"}


def test_unstructured_dsee_keeps_the_pruned_weights_zero_through_the_second_fine_tuning(inputs, tmp_path, capsys):
    summary = dsee(inputs, tmp_path / "run", capsys, "dsee.prune=unstructured", "dsee.sparsity=0.5")
    assert summary["dsee"]["weights_zeroed"] == 4 * 512 and summary["slim"]["params"] == summary["full"]["params"]
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    for layer in (0, 1):
        for name in ("query", "value"):
            w = weights[f"bert.encoder.layer.{layer}.attention.self.{name}.weight"]
            assert int((w == 0).sum()) == 512


def test_a_dsee_run_resumed_after_its_first_stage_repeats_the_same_pruning_and_result(inputs, tmp_path, capsys):
    first = dsee(inputs, tmp_path / "run", capsys)
    for name in ("summary.json", "eval_results.json", "model", "checkpoints", "ticket.json"):
        target = tmp_path / "run" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    again = dsee(inputs, tmp_path / "run", capsys, "resume=auto")
    assert again["eval"] == first["eval"] and again["time_s"]["dsee"] == first["time_s"]["dsee"]
    assert again["dsee"] == first["dsee"]


@pytest.mark.parametrize("extra, message", [
    (["dsee.targets=[q_proj]"], "dsee.targets=['q_proj'] matches no linear layer of this bert model"),
    (["resume=."], "mode=dsee resumes its own stages: use resume=auto, not resume=."),
    (["dsee.prune=heads"], "dsee.prune"),
])
def test_bad_dsee_settings_are_one_line_exit_2_and_create_nothing(inputs, tmp_path, capsys, extra, message):
    code = finetune_main(["glue", "--config", DSEE_YAML, f"model={inputs['model']}", f"data_dir={inputs['data']}",
                          f"output_dir={tmp_path / 'run'}", *FAST, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_dsee_on_a_grouped_query_llama_removes_as_many_heads_from_every_kv_group(tmp_path, capsys):
    llama = {"model": make_tiny_model(tmp_path / "llama", "llama", num_key_value_heads=2),
             "data": make_glue_task("sst2", tmp_path / "sst2")}
    summary = dsee(llama, tmp_path / "run", capsys, "dsee.heads_ratio=0.5")
    assert summary["dsee"]["targets"] == 4  # q_proj and v_proj of both layers by default
    assert (summary["dsee"]["heads_removed"], summary["dsee"]["heads"]) == (4, 8)
    for row in json.loads((tmp_path / "run" / "ticket.json").read_text())["heads"]:
        assert sum(row[:2]) == sum(row[2:]) == 1  # one query head left beside each of the 2 KV heads
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 2)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    assert type(model).__name__.endswith("LlamaForSequenceClassification")


def test_dsee_on_gpt2_removes_heads_through_its_fused_conv1d_and_saves_slim_classes(tmp_path, capsys):
    gpt2 = {"model": make_tiny_model(tmp_path / "gpt2", "gpt2"), "data": make_glue_task("sst2", tmp_path / "sst2")}
    summary = dsee(gpt2, tmp_path / "run", capsys)
    # One fused c_attn of 32 -> 96 per layer: rank 4 (4 x 32 + 96 x 4) + 16 sparse entries; the 2-class score 32 x 2.
    assert summary["dsee"]["targets"] == 2 and summary["dsee"]["trainable_params"] == 2 * (4 * 128 + 16) + 64
    assert (summary["dsee"]["heads_removed"], summary["dsee"]["heads"]) == (2, 8)
    assert summary["slim"]["layer_heads"] == [3, 3] and summary["slim"]["params"] < summary["full"]["params"]
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (32, 72)  # still Conv1D's [in, out]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model", trust_remote_code=True)
    assert type(model).__name__ == "SlimGPT2ForSequenceClassification"


def test_unstructured_dsee_on_gpt2_keeps_half_of_each_conv1d_zero_through_the_second_fine_tuning(tmp_path, capsys):
    gpt2 = {"model": make_tiny_model(tmp_path / "gpt2", "gpt2"), "data": make_glue_task("sst2", tmp_path / "sst2")}
    summary = dsee(gpt2, tmp_path / "run", capsys, "dsee.prune=unstructured", "dsee.sparsity=0.5")
    assert summary["dsee"]["weights_zeroed"] == 2 * 32 * 96 // 2  # half of each layer's c_attn, 32 -> 96
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    for layer in (0, 1):
        assert int((weights[f"transformer.h.{layer}.attn.c_attn.weight"] == 0).sum()) == 32 * 96 // 2


def test_a_head_ratio_the_kv_groups_cannot_share_is_refused_before_training(tmp_path, capsys):
    llama = {"model": make_tiny_model(tmp_path / "llama", "llama", num_key_value_heads=2),
             "data": make_glue_task("sst2", tmp_path / "sst2")}
    code = finetune_main(["glue", "--config", DSEE_YAML, f"model={llama['model']}", f"data_dir={llama['data']}",
                          f"output_dir={tmp_path / 'run'}", *FAST])  # 0.25 of 4 heads: 1, not one per KV group
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "each of the 2 KV groups must lose the same number" in err[0]
    assert not (tmp_path / "run").exists()
