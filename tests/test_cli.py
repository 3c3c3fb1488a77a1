import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM, pipeline

from earlybert.cli import main
from earlybert.ticket.ticket import Ticket
from tests.conftest import run_earlybert, tiny_model


@pytest.fixture(scope="module")
def minilm_mlm_dir(minilm_path, tmp_path_factory) -> Path:
    """Real MiniLM-L6 weights as a plain BertForMaskedLM folder with its tokenizer."""
    out = tmp_path_factory.mktemp("minilm-mlm")
    torch.manual_seed(0)
    BertForMaskedLM.from_pretrained(minilm_path).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


def uneven_minilm_ticket() -> Ticket:
    """Different numbers of heads (of 12) and FFN neurons (of 1536) pruned in each of the 6 layers."""
    heads = [[1] * (12 - k) + [0] * k for k in (0, 2, 4, 6, 8, 11)]
    ffn = [[1] * (1536 - k) + [0] * k for k in (0, 100, 500, 768, 1200, 1500)]
    return Ticket("bert", heads=heads, ffn=ffn, metadata={"step": 0})




@pytest.mark.slow
def test_shrink_real_minilm_folder_loads_with_auto_class_and_fill_mask(minilm_mlm_dir, tmp_path):
    ticket_path = tmp_path / "ticket.json"
    uneven_minilm_ticket().save(ticket_path)
    out = tmp_path / "slim"
    result = run_earlybert("shrink", "--model", str(minilm_mlm_dir), "--ticket", str(ticket_path), "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"model.safetensors", "config.json", "ticket.json", "modeling_earlybert.py", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}

    slim = AutoModelForMaskedLM.from_pretrained(out).eval()
    assert type(slim).__name__ == "SlimBertForMaskedLM"
    assert [layer.attention.self.query.out_features // 32 for layer in slim.bert.encoder.layer] == [12, 10, 8, 6, 4, 1]
    assert [layer.intermediate.dense.out_features for layer in slim.bert.encoder.layer] == [
        1536, 1436, 1036, 768, 336, 36]
    # The unpruned first layer keeps its real weights exactly.
    full = BertForMaskedLM.from_pretrained(minilm_mlm_dir)
    assert torch.equal(slim.bert.encoder.layer[0].output.dense.weight, full.bert.encoder.layer[0].output.dense.weight)
    assert torch.equal(slim.bert.encoder.layer[5].attention.self.query.weight,
                       full.bert.encoder.layer[5].attention.self.query.weight[:32])

    fill = pipeline("fill-mask", model=str(out), tokenizer=str(out))
    predictions = fill("the capital of france is [MASK].")
    assert len(predictions) == 5 and all(isinstance(p["token_str"], str) for p in predictions)

    info = run_earlybert("info", str(out))
    assert info.returncode == 0, info.stderr[-2000:]
    assert "heads kept 41/72, ffn kept 5148/9216" in info.stdout


def test_shrink_refuses_non_empty_output_without_overwrite(tmp_path, capsys):
    model = tiny_model("bert")
    model.save_pretrained(tmp_path / "model")
    Ticket("bert", heads=[[1, 1, 0, 1]] * 2, ffn=[[1] * 40 + [0] * 8] * 2).save(tmp_path / "t.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    args = ["shrink", "--model", str(tmp_path / "model"), "--ticket", str(tmp_path / "t.json"),
            "--output", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not empty" in err and "--overwrite" in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"
    assert main([*args, "--overwrite"]) == 0
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["layer_num_heads"] == [3, 3]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


@pytest.mark.parametrize(
    "ticket, message",
    [
        ({"heads": [[0, 0, 0, 0], [1, 1, 1, 1]]}, "layer 0 prunes every head"),
        ({"heads": [[1] * 12] * 2}, "do not match the model"),
        ({"format": "earlybert-ticket/9"}, "format"),
    ],
)
def test_bad_tickets_give_one_line_errors_and_write_nothing(tmp_path, capsys, ticket, message):
    tiny_model("bert").save_pretrained(tmp_path / "model")
    data = {"format": "earlybert-ticket/1", "model_type": "bert", "heads": [[1, 1, 1, 0]] * 2,
            "ffn": [[1] * 48] * 2, **ticket}
    (tmp_path / "t.json").write_text(json.dumps(data))
    capsys.readouterr()
    code = main(["shrink", "--model", str(tmp_path / "model"), "--ticket", str(tmp_path / "t.json"),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_unknown_model_type_is_one_line_error(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "opt", "architectures": ["OPTModel"]}))
    Ticket("bert", heads=[[1]], ffn=[[1]]).save(tmp_path / "t.json")
    code = main(["shrink", "--model", str(tmp_path / "model"), "--ticket", str(tmp_path / "t.json"),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert ("model type 'opt' is not supported: use one of bert, deberta-v2, distilbert, electra, gpt2, llama, "
            "modernbert, qwen2, qwen3, roberta, xlm-roberta (or their slim_ versions)") in err
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert "does not exist: give an existing folder" in capsys.readouterr().err
