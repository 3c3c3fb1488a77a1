import gzip

import numpy as np
import pytest

from earlybert.data.corpus import BlockSampler, DataConfig, mask_tokens, read_documents, train_wordpiece
from earlybert.data.prepare import prepare
from earlybert.errors import EarlyBertError

TEXT = ("The whale swam far.\nIt was large.\n\nA second story begins here.\n\n\nThird one, at last.\n")


@pytest.fixture(scope="module")
def tokenizer():
    docs = [f"sentence number {i} about whales ships and the sea." for i in range(300)]
    return train_wordpiece(docs, vocab_size=200)


def test_documents_split_at_blank_lines_in_plain_and_gzip_files(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(TEXT)
    docs = read_documents([str(tmp_path / "a.txt"), str(tmp_path / "b.txt.gz")])
    assert docs[:3] == ["The whale swam far. It was large.", "A second story begins here.", "Third one, at last."]
    assert len(docs) == 6
    assert read_documents([str(tmp_path / "a.txt")], max_documents=2) == docs[:2]


def test_bad_corpora_are_refused(tmp_path):
    with pytest.raises(EarlyBertError, match="does not exist"):
        read_documents([str(tmp_path / "none.txt")])
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(EarlyBertError, match="holds no text"):
        read_documents([str(tmp_path / "empty.txt")])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(EarlyBertError, match="not UTF-8"):
        read_documents([str(tmp_path / "latin1.txt")])


def test_masking_is_per_sample_deterministic_and_follows_bert_rules(tokenizer):
    rng = np.random.default_rng(0)
    blocks = rng.integers(5, 200, size=(64, 32)).astype(np.int32)
    blocks[:, 0], blocks[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = np.arange(100, 164)
    batch = mask_tokens(blocks, ids, tokenizer, 0.15, seed=3, vocab_size=200)
    # The same samples in another grouping (as on another rank layout) are masked identically.
    half = mask_tokens(blocks[32:], ids[32:], tokenizer, 0.15, seed=3, vocab_size=200)
    assert (half["input_ids"] == batch["input_ids"][32:]).all() and (half["labels"] == batch["labels"][32:]).all()
    labels, inputs = batch["labels"], batch["input_ids"]
    chosen = labels != -100
    assert 0.11 < chosen.float().mean().item() < 0.19
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # special tokens are never chosen
    assert (labels[chosen] == blocks[chosen.numpy()].astype(np.int64)).all()
    masked_share = (inputs[chosen] == tokenizer.mask_token_id).float().mean().item()
    assert 0.7 < masked_share < 0.9
    assert (inputs[~chosen] == blocks[~chosen.numpy()].astype(np.int64)).all()


def test_sampler_is_a_permutation_per_epoch():
    sampler = BlockSampler(num_blocks=10, global_batch=4, seed=1)
    seen = np.concatenate([sampler.block_ids(sampler.sample_ids(s)) for s in range(5)])  # 20 samples, 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:20])
    again = BlockSampler(num_blocks=10, global_batch=4, seed=1)
    assert np.array_equal(again.block_ids(again.sample_ids(3)), sampler.block_ids(sampler.sample_ids(3)))


def test_streamed_blocks_match_prepared_blocks_and_wrap_and_resume(tokenizer, tmp_path):
    from earlybert.data.corpus import StreamingBlocks

    docs = [f"the sea and the ship number {i} sailed far" for i in range(40)]
    (tmp_path / "docs.txt").write_text("\n\n".join(docs))
    cfg = DataConfig(train_files=[str(tmp_path / "docs.txt")], cache_dir=str(tmp_path / "cache"))
    packed = prepare(cfg, tokenizer, log=lambda _: None).blocks(16, tokenizer)
    n = len(packed)
    stream = StreamingBlocks(lambda: iter(docs), tokenizer, 16)
    assert np.array_equal(stream.take(np.arange(0, 4)), packed[:4])
    assert np.array_equal(stream.take(np.array([5, 7])), packed[[5, 7]])  # skipping forward
    assert np.array_equal(stream.take(np.array([n, n + 1])), packed[:2])  # the next epoch
    fresh = StreamingBlocks(lambda: iter(docs), tokenizer, 16)  # a resumed run jumps straight in
    assert np.array_equal(fresh.take(np.array([n + 3])), packed[[3]])
    assert np.array_equal(fresh.take(np.array([1])), packed[[1]])  # going back restarts the stream


def test_unframed_streamed_blocks_match_unframed_prepared_blocks(tokenizer, tmp_path):
    from earlybert.data.corpus import StreamingBlocks

    docs = [f"the sea and the ship number {i} sailed far" for i in range(40)]
    (tmp_path / "docs.txt").write_text("\n\n".join(docs))
    cfg = DataConfig(train_files=[str(tmp_path / "docs.txt")], cache_dir=str(tmp_path / "cache"))
    packed = prepare(cfg, tokenizer, log=lambda _: None).blocks(16, tokenizer, framed=False)
    stream = StreamingBlocks(lambda: iter(docs), tokenizer, 16, framed=False)
    assert np.array_equal(stream.take(np.arange(0, 5)), packed[:5])
    assert (packed[:5][:, 0] != tokenizer.cls_token_id).all()  # text from the first position


def test_sentence_pairs_for_next_sentence_prediction(tokenizer):
    from earlybert.data.corpus import sentence_pairs

    rng = np.random.default_rng(1)
    blocks = rng.integers(10, 200, size=(8, 24)).astype(np.int32)
    blocks[:, 0], blocks[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, types, labels = sentence_pairs(blocks, np.arange(8), tokenizer, seed=5)
    assert ids.shape == blocks.shape and set(labels.tolist()) == {0, 1}
    for row in range(8):
        cut = int(np.argmax(types[row])) - 2  # B starts after [CLS] A [SEP]
        assert ids[row, 0] == tokenizer.cls_token_id and ids[row, cut + 1] == tokenizer.sep_token_id
        assert ids[row, -1] == tokenizer.sep_token_id and (types[row, cut + 2:] == 1).all()
        assert (ids[row, 1:cut + 1] == blocks[row, 1:cut + 1]).all()
        source = row if labels[row] == 0 else (row + 1) % 8
        assert (ids[row, cut + 2:-1] == blocks[source, 1 + cut:-2]).all()
    again = sentence_pairs(blocks, np.arange(8), tokenizer, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(again, (ids, types, labels)))
