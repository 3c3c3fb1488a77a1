"""Fine-tuning batches and evaluation: padding to each batch's longest example, length grouping."""

import random

import numpy as np
import pytest
import torch

from earlybert.data.batches import ExampleBatches, trim_padding
from earlybert.data.corpus import BlockSampler
from earlybert.tasks import squad
from earlybert.tasks.evaluation import predict_logits
from earlybert.tasks.glue import Example, glue_features
from tests.conftest import tiny_model
from tests.task_fixtures import make_squad, make_tiny_bert, sentence


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(make_tiny_bert(tmp_path_factory.mktemp("bert")))


def short_and_long(tokenizer, n=40):
    rng = random.Random(3)
    examples = [Example(texts=(sentence(rng, rng.choice([2, 3, 20])),), label=i % 3, index=str(i)) for i in range(n)]
    return glue_features(tokenizer, examples, 64, regression=False)


def test_trim_padding_cuts_to_the_longest_row_and_leaves_other_tensors(tokenizer):
    features = short_and_long(tokenizer)
    batch = {k: v[:6] for k, v in features.items()}
    trimmed = trim_padding(batch)
    longest = int(batch["attention_mask"].sum(1).max())
    assert trimmed["input_ids"].shape == (6, longest) < batch["input_ids"].shape
    assert torch.equal(trimmed["input_ids"], batch["input_ids"][:, :longest])
    assert torch.equal(trimmed["labels"], batch["labels"])
    left = {k: v.flip(1) if v.ndim == 2 else v for k, v in batch.items()}  # left padding: kept whole
    assert trim_padding(left)["input_ids"].shape[1] == 64


def test_dynamic_padding_gives_the_same_predictions_as_max_length_padding(tokenizer, tmp_path):
    model = tiny_model("bert", "sequence_classification", vocab_size=len(tokenizer), max_positions=128)
    features = short_and_long(tokenizer)
    features.pop("labels")
    (dynamic,) = predict_logits(model, features, 8, dynamic_padding=True)
    (padded,) = predict_logits(model, features, 8, dynamic_padding=False)
    np.testing.assert_allclose(dynamic, padded, atol=1e-5)
    assert (dynamic.argmax(-1) == padded.argmax(-1)).all()
    qa = tiny_model("bert", "question_answering", vocab_size=len(tokenizer), max_positions=128)
    examples = squad.read_squad(make_squad(tmp_path / "squad") / "dev-v1.1.json")
    inputs, example_of, offsets = squad.eval_features(tokenizer, examples, 64, 32)
    runs = [predict_logits(qa, inputs, 4, dynamic_padding=d) for d in (True, False)]
    real = inputs["attention_mask"].bool().numpy()
    for dyn, full in zip(*runs):
        np.testing.assert_allclose(dyn[real], full[real], atol=1e-5)
    answers = [squad.postprocess(examples, example_of, offsets, *run, 20, 30)[0] for run in runs]
    assert answers[0] == answers[1]


def test_training_batches_are_padded_per_batch_and_the_loss_is_unchanged(tokenizer):
    features = short_and_long(tokenizer)
    model = tiny_model("bert", "sequence_classification", vocab_size=len(tokenizer), max_positions=128)
    dynamic = ExampleBatches(features, 8, 1, 0, 1, seed=1, dynamic_padding=True)(0)[0]
    padded = ExampleBatches(features, 8, 1, 0, 1, seed=1, dynamic_padding=False)(0)[0]
    assert dynamic["input_ids"].shape[1] == int(padded["attention_mask"].sum(1).max()) < 64
    with torch.no_grad():
        assert torch.allclose(model(**dynamic).loss, model(**padded).loss, atol=1e-6)


def test_group_by_length_orders_windows_longest_first_and_keeps_every_example():
    lengths = np.random.default_rng(0).integers(3, 64, size=1000)
    sampler = BlockSampler(1000, global_batch=4, seed=2, lengths=lengths)
    order = sampler.block_ids(np.arange(1000))
    assert sorted(order) == list(range(1000))
    window = BlockSampler.GROUP_BATCHES * 4
    for start in range(0, 1000, window):
        chunk = lengths[order[start:start + window]]
        assert (np.diff(chunk) <= 0).all()
    plain = BlockSampler(1000, global_batch=4, seed=2).block_ids(np.arange(1000))
    assert set(plain[:window]) == set(order[:window])  # the same windows, only reordered inside
    spread = lambda ids: np.mean([np.ptp(lengths[ids[i:i + 4]]) for i in range(0, 1000, 4)])  # noqa: E731
    assert spread(order) < spread(plain) / 5  # batches of similar lengths
