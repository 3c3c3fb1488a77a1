"""Bad input to `earlybert pretrain`: exit code 2, one line on stderr, nothing created or overwritten."""

import json
from pathlib import Path

import pytest

from earlybert.pretrain import main as pretrain_main
from tests.conftest import REPO, run_earlybert

TINY = str(REPO / "configs/pretrain/tiny.yaml")


@pytest.fixture
def setup(tmp_path, pydoc_corpus, minilm_path):
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "summary.json").write_text('{"steps": 60}')
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "norun").mkdir()
    return {"tmp": tmp_path, "corpus": pydoc_corpus, "minilm": minilm_path, "finished": finished}


CASES = {
    "missing corpus": (["data.train_files={tmp}/nope.txt"], "corpus file {tmp}/nope.txt does not exist"),
    "empty corpus": (["data.train_files={tmp}/empty.txt"], "holds no text"),
    "no corpus": (["data.train_files=[]"], "no corpus given"),
    "unknown key": (["data.train_files={corpus}", "train.lr_max=1"], "unknown config key train.lr_max"),
    "tokenizer too big": (["data.train_files={corpus}", "data.tokenizer={minilm}"],
                          "the tokenizer has 30522 tokens but the model's vocabulary is 1000"),
    "seq_len too long": (["data.train_files={corpus}", "data.seq_len=256", "model.max_position_embeddings=128"],
                         "sequence length 256 exceeds the model's 128 position embeddings"),
    "resume without checkpoint": (["data.train_files={corpus}", "resume={tmp}/norun"], "holds no checkpoint"),
    "finished run": (["data.train_files={corpus}", "output_dir={finished}"], "holds a finished run"),
    "missing deepspeed json": (["data.train_files={corpus}", "train.deepspeed_config={tmp}/ds.json"],
                               "DeepSpeed config {tmp}/ds.json does not exist"),
    "phases disagree": (["data.train_files={corpus}", "phases=[{{steps: 5, seq_len: 32}}]"],
                        "phases add up to 5 steps but train.max_steps is 60"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(setup, case, capsys):
    overrides, message = CASES[case]
    fmt = {k: str(v) for k, v in setup.items()}
    out = setup["tmp"] / "out"
    args = ["--config", TINY, f"output_dir={out}", f"data.cache_dir={setup['tmp']}/cache"]
    args += [o.format(**fmt) for o in overrides]
    before = sorted(p.name for p in setup["finished"].iterdir())
    capsys.readouterr()
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("earlybert pretrain: error: ")
    assert message.format(**fmt) in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in setup["finished"].iterdir()) == before
    assert json.loads((Path(setup["finished"]) / "summary.json").read_text()) == {"steps": 60}


def test_the_console_command_exits_2_with_one_line(tmp_path):
    result = run_earlybert("pretrain", "--config", TINY, f"output_dir={tmp_path}/out", "model.hidden=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "earlybert pretrain: error: unknown config key model.hidden: known keys here are attention_dropout, family, "
        "hidden_dropout, hidden_size, init_from, intermediate_size, max_position_embeddings, num_heads, num_layers, "
        "vocab_size"]
    assert not (tmp_path / "out").exists()
