"""Corpus preparation: a memory-mapped token stream written once by parallel processes, found again by its key."""

import os
import subprocess
import sys

import numpy as np
import pytest

from earlybert.data import prepare as prep
from earlybert.data.corpus import DataConfig, read_documents, train_wordpiece
from earlybert.errors import EarlyBertError
from tests.conftest import REPO, clean_env


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([f"sentence number {i} about whales ships and the sea." for i in range(300)], 200)


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"the sea and the ship number {i} sailed far.\nA second line {i}." for i in range(300)))
    return path


def config(corpus, tmp_path, **kw) -> DataConfig:
    return DataConfig(train_files=[str(corpus)], cache_dir=str(tmp_path / "cache"), **kw)


def reference_stream(docs, tokenizer) -> list[int]:
    """The token stream written independently: each document's ids, then [SEP]."""
    out = []
    for doc in docs:
        out += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    return out


@pytest.mark.parametrize("num_proc", [1, 2])
def test_prepared_blocks_are_the_document_stream_cut_with_cls_and_sep(corpus, tmp_path, tokenizer, num_proc,
                                                                      monkeypatch):
    monkeypatch.setattr(prep, "CHUNK_BYTES", 500)  # many chunks, so the processes share the work
    prepared = prep.prepare(config(corpus, tmp_path, num_proc=num_proc), tokenizer, log=lambda _: None)
    stream = reference_stream(read_documents([str(corpus)]), tokenizer)
    assert prepared.meta["tokens"] == len(stream) and prepared.meta["documents"] == 300
    assert prepared.meta["num_proc"] == num_proc
    assert np.array_equal(np.asarray(prepared.tokens), np.asarray(stream, dtype=np.uint32))
    for seq_len in (16, 40):  # one file serves every phase's length
        blocks = prepared.blocks(seq_len, tokenizer)
        assert len(blocks) == len(stream) // (seq_len - 2)
        rows = blocks[np.array([0, 3, len(blocks) - 1])]
        assert rows.shape == (3, seq_len) and rows.dtype == np.int32
        assert (rows[:, 0] == tokenizer.cls_token_id).all() and (rows[:, -1] == tokenizer.sep_token_id).all()
        body = seq_len - 2
        assert list(rows[1, 1:-1]) == stream[3 * body:4 * body]
    with pytest.raises(EarlyBertError, match="fewer than one block"):
        prepared.blocks(len(stream) + 10, tokenizer)


def test_causal_lm_blocks_are_plain_runs_of_a_stream_whose_documents_end_with_eos(corpus, tmp_path):
    from transformers import PreTrainedTokenizerFast

    wordpiece = train_wordpiece([f"sentence number {i} about whales ships and the sea." for i in range(300)], 200)
    decoder_tok = PreTrainedTokenizerFast(tokenizer_object=wordpiece.backend_tokenizer, eos_token="[SEP]")
    assert decoder_tok.sep_token_id is None  # a decoder's tokenizer: documents end with its end-of-sequence token
    prepared = prep.prepare(config(corpus, tmp_path), decoder_tok, log=lambda _: None)
    eos = decoder_tok.eos_token_id
    stream = []
    for doc in read_documents([str(corpus)]):
        stream += decoder_tok(doc, add_special_tokens=False)["input_ids"] + [eos]
    assert np.array_equal(np.asarray(prepared.tokens), np.asarray(stream, dtype=np.uint32))
    blocks = prepared.blocks(16, decoder_tok, framed=False)
    assert len(blocks) == len(stream) // 16
    assert list(blocks[2][0]) == stream[32:48]  # no [CLS] ... [SEP] frame: every position is text


def test_the_second_prepare_finds_the_cache_and_tokenizes_nothing(corpus, tmp_path, tokenizer, monkeypatch):
    first = prep.prepare(config(corpus, tmp_path), tokenizer, log=lambda _: None)
    monkeypatch.setattr(prep, "_tokenize_to", lambda *a: pytest.fail("tokenized again"))
    said = []
    again = prep.prepare(config(corpus, tmp_path), tokenizer, log=said.append)
    assert again.folder == first.folder and "no tokenization" in said[0]
    assert np.array_equal(np.asarray(again.tokens), np.asarray(first.tokens))


def test_the_key_follows_the_files_content_and_the_document_limit(corpus, tmp_path):
    key = prep.corpus_key(config(corpus, tmp_path))
    assert prep.corpus_key(config(corpus, tmp_path)) == key
    assert prep.corpus_key(config(corpus, tmp_path, max_documents=10)) != key
    text = corpus.read_text()
    corpus.write_text(text.replace("sailed", "rowed!"))  # same size, new content
    assert prep.corpus_key(config(corpus, tmp_path)) != key


def test_bad_caches_and_mismatched_prepared_folders_are_refused(corpus, tmp_path, tokenizer):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EarlyBertError, match=r"data.cache_dir .*file/cache cannot be created"):
        prep.prepare(DataConfig(train_files=[str(corpus)], cache_dir=str(tmp_path / "file" / "cache")), tokenizer)
    with pytest.raises(EarlyBertError, match=r"data.cache_dir /sys is not writable"):
        prep.prepare(DataConfig(train_files=[str(corpus)], cache_dir="/sys"), tokenizer)
    made = prep.prepare(config(corpus, tmp_path), tokenizer, log=lambda _: None)
    other = train_wordpiece([f"entirely different words {i} here" for i in range(200)], 150)
    with pytest.raises(EarlyBertError, match="was prepared with another tokenizer"):
        prep.prepare(config(corpus, tmp_path, prepared=str(made.folder)), other)
    corpus.write_text(corpus.read_text() + "\n\nOne more document.")
    before = sorted(os.listdir(made.folder))
    with pytest.raises(EarlyBertError, match="the corpus changed since .* was prepared"):
        prep.prepare(config(corpus, tmp_path, prepared=str(made.folder)), tokenizer)
    assert sorted(os.listdir(made.folder)) == before
    with pytest.raises(EarlyBertError, match="holds no prepared corpus"):
        prep.prepare(config(corpus, tmp_path, prepared=str(tmp_path)), tokenizer)


@pytest.mark.slow
def test_two_processes_on_a_fresh_cache_one_prepares_the_other_waits_and_reads_it(corpus, tmp_path, tokenizer):
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    script = (
        "import sys; from earlybert.data.corpus import DataConfig, load_tokenizer; "
        "from earlybert.data.prepare import prepare; "
        f"cfg = DataConfig(train_files=[{str(corpus)!r}], cache_dir={str(tmp_path / 'cache')!r}, num_proc=1); "
        f"c = prepare(cfg, load_tokenizer({str(tmp_path / 'tok')!r}), log=lambda m: print('LOG', m)); "
        "print('FOLDER', c.folder)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=clean_env(), stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    folders = {line.split(" ", 1)[1] for out in outputs for line in out.splitlines() if line.startswith("FOLDER")}
    assert len(folders) == 1
    logs = [line for out in outputs for line in out.splitlines() if line.startswith("LOG")]
    assert sum("data: prepared" in line for line in logs) == 1  # tokenized once
    assert sum("no tokenization" in line for line in logs) == 1  # the other waited and read it
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("prepared-")] == [
        os.path.basename(folders.pop())]


@pytest.mark.slow
def test_the_prepare_command_prints_one_summary_line_and_a_run_finds_its_folder(corpus, tmp_path, tokenizer):
    from tests.conftest import run_earlybert

    tokenizer.save_pretrained(str(tmp_path / "tok"))
    args = ["--config", str(REPO / "configs/pretrain/tiny.yaml"), f"data.train_files={corpus}",
            f"data.tokenizer={tmp_path / 'tok'}", f"data.cache_dir={tmp_path / 'cache'}", "log.progress_bar=false"]
    done = run_earlybert("prepare", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("data: prepared 300 documents"), lines
    assert "blocks of 64" in lines[0] and "MB/s" in lines[0]
    again = run_earlybert("prepare", *args)
    assert "no tokenization" in again.stdout
