"""Causal-LM continued pretraining of a decoder through `earlybert pretrain`: search, GQA-aware draw, shrink, slim
training, a stock final model, exact resume."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from earlybert.ticket.ticket import Ticket
from tests.conftest import REPO, SHARED, kill_at_step, load_without_earlybert, run_earlybert, smollm2_file

pytestmark = pytest.mark.slow

SMOLLM2 = str(REPO / "configs/pretrain/smollm2-135m.yaml")


def decoder_args(run_dir: Path, model: Path, corpus: Path, cache: Path, *extra: str) -> list[str]:
    """The shipped SmolLM2 config at tiny sizes: 40 steps of 4 x 32 tokens, search over the first 20."""
    return ["pretrain", "--config", SMOLLM2, f"output_dir={run_dir}", f"model.init_from={model}", "model.gguf_file=",
            f"data.train_files={corpus}", f"data.cache_dir={cache}", "data.seq_len=32", "train.max_steps=40",
            "train.micro_batch_size=4", "train.grad_accum=1", "train.lr=0.003", "train.warmup_steps=2",
            "search.check_every=1", "search.max_search_steps=20", "search.ffn_round_to=8", "search.lambda_heads=0.001",
            "search.lambda_ffn=0.001", "checkpoint.every=5", "checkpoint.keep_last=2", "log.every=1", *extra]


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, tiny_llama, pydoc_corpus) -> Path:
    root = tmp_path_factory.mktemp("decoder-run")
    result = run_earlybert(*decoder_args(root / "run", tiny_llama, pydoc_corpus, root / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_a_decoder_searches_shrinks_and_ends_as_a_stock_llama(decoder_run, tmp_path):
    summary = json.loads((decoder_run / "summary.json").read_text())
    assert summary["ticket_step"] <= 20 and summary["steps"] == 40
    ticket = Ticket.load(decoder_run / "ticket.json")
    for layer in ticket.heads:  # kv_groups=keep: 4 of 6 query heads, two in each of the two KV groups
        assert sum(layer) == 4 and sum(layer[:3]) == 2 and sum(layer[3:]) == 2
    assert [sum(layer) for layer in ticket.ffn] == [64, 64]  # ffn_scope=layer: the same width in every layer
    rows = [json.loads(line) for line in (decoder_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3  # next-token loss (ln 512 = 6.2 at start) falls
    config = json.loads((decoder_run / "model" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 2 and config["intermediate_size"] == 64
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    stock = load_without_earlybert(decoder_run / "model", ids, tmp_path)
    assert stock["class"] == "LlamaForCausalLM" and stock["tied"]
    from transformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(decoder_run / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(stock["logits"], ours(ids).logits)


def test_evaluate_lm_scores_held_out_text_better_after_training_than_before(decoder_run, tiny_llama, tmp_path):
    held_out = SHARED / "data" / "corpus" / "sotu.txt.gz"  # speeches, never seen in training (pydoc's help)
    scores = {}
    for name, folder in (("before", tiny_llama), ("after", decoder_run / "model")):
        result = run_earlybert("evaluate", "lm", "--model", str(folder), "--data", str(held_out), "--seq-len", "32",
                               "--max-blocks", "40")
        assert result.returncode == 0, result.stderr[-2000:]
        scores[name] = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["before"]["tokens"] == scores["after"]["tokens"] == 40 * 31
    assert scores["before"]["perplexity"] > 400  # an untrained model of 512 tokens is near uniform
    assert scores["after"]["perplexity"] < 0.8 * scores["before"]["perplexity"]
    refused = run_earlybert("evaluate", "lm", "--model", str(tmp_path), "--data", str(held_out))
    assert refused.returncode == 2 and "is not a model folder (no config.json)" in refused.stderr


def test_a_decoder_run_killed_after_the_draw_resumes_to_identical_weights(decoder_run, tiny_llama, pydoc_corpus,
                                                                          tmp_path):
    drawn = json.loads((decoder_run / "summary.json").read_text())["ticket_step"]
    args = decoder_args(tmp_path / "run", tiny_llama, pydoc_corpus, decoder_run.parent / "cache")
    kill_at_step(args, tmp_path / "run", drawn + 7)
    result = run_earlybert(*args, "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = load_file(str(decoder_run / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


def test_distillation_from_the_dense_model_at_the_draw_resumes_to_identical_weights(decoder_run, tiny_llama,
                                                                                     pydoc_corpus, tmp_path):
    args = decoder_args(tmp_path / "run", tiny_llama, pydoc_corpus, decoder_run.parent / "cache", "distill.alpha=0.5")
    done = run_earlybert(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "teacher.safetensors").is_file()
    drawn = json.loads((tmp_path / "run" / "summary.json").read_text())["ticket_step"]
    distilled = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    plain = load_file(str(decoder_run / "model" / "model.safetensors"))
    assert not torch.equal(distilled["model.layers.0.mlp.down_proj.weight"],
                           plain["model.layers.0.mlp.down_proj.weight"])  # the teacher term changed training
    args = decoder_args(tmp_path / "killed", tiny_llama, pydoc_corpus, decoder_run.parent / "cache",
                        "distill.alpha=0.5")
    kill_at_step(args, tmp_path / "killed", drawn + 7)
    result = run_earlybert(*args, "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    for name, tensor in distilled.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


def test_smollm2_from_its_gguf_file_continues_pretraining_into_a_stock_llama(pydoc_corpus, tmp_path):
    gguf = smollm2_file()
    result = run_earlybert("pretrain", "--config", SMOLLM2, f"output_dir={tmp_path / 'run'}",
                           f"model.init_from={gguf.parent}", f"model.gguf_file={gguf.name}",
                           f"data.train_files={pydoc_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
                           "data.seq_len=32", "data.max_documents=200", "train.max_steps=6", "train.micro_batch_size=2",
                           "train.grad_accum=1", "search.max_search_steps=3", "search.check_every=1",
                           "checkpoint.every=100", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]) == (6, 3, 768)
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()


def test_gpt2_continues_pretraining_into_slim_classes_that_load_with_remote_code(tiny_llama, pydoc_corpus, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path / "gpt2"  # six heads of 8 in hidden 48 over fused q/k/v Conv1Ds; the tiny Llama's tokenizer
    PreTrainedTokenizerFast.from_pretrained(tiny_llama).save_pretrained(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=48, n_layer=2, n_head=6, n_inner=128, n_positions=128,
                               eos_token_id=0, bos_token_id=0)).save_pretrained(folder)
    result = run_earlybert(*decoder_args(tmp_path / "run", folder, pydoc_corpus, tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["ticket_step"] <= 20 and summary["steps"] == 40
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    # Heads removed: GPT-2 derives the head size from hidden / heads, so the slim classes describe the model.
    assert config["model_type"] == "slim_gpt2" and config["layer_num_heads"] == [4, 4]
    assert config["layer_intermediate_sizes"] == [64, 64]
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    loaded = load_without_earlybert(tmp_path / "run" / "model", ids, tmp_path, remote_code=True)
    assert loaded["class"] == "SlimGPT2LMHeadModel" and loaded["tied"]
    from transformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded["logits"], ours(ids).logits)
