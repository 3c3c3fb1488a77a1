"""Decoder families (Llama, Qwen2, Qwen3, GPT-2): grouped-query tickets, shrink, stock saving, generation."""

import json

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from earlybert.errors import EarlyBertError
from earlybert.models.flops import count_parameters, slim_parameter_count
from earlybert.models.modeling import REMOTE_CODE_FILE
from earlybert.ticket.coefficients import attach_coefficients, ffn_coefficients, head_coefficients, set_coefficients
from earlybert.ticket.masks import MaskSpec, draw_ticket, head_masks, random_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket
from tests.conftest import load_without_earlybert, smollm2_file

FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
# Six query heads of 16 over two KV heads (three per group) in hidden 48; SwiGLU width 96; tied embeddings.
SIZES = dict(vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
             head_dim=16, intermediate_size=96, tie_word_embeddings=True)


def tiny_decoder(family: str, **overrides) -> torch.nn.Module:
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(0)
    return model_cls(config_cls(**{**SIZES, **overrides})).eval()


def searched(model: torch.nn.Module) -> torch.nn.Module:
    """Coefficients attached with distinct values, as a search leaves them."""
    attach_coefficients(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for c in head_coefficients(model) + ffn_coefficients(model):
            c.copy_(0.5 + torch.rand(c.shape, generator=gen))
    return model


def masked(model: torch.nn.Module, ticket: Ticket) -> torch.nn.Module:
    """The searched model with the ticket's pruned units' coefficients at zero: what the slim model computes."""
    set_coefficients(model, [c.detach() * torch.tensor(m) for c, m in zip(head_coefficients(model), ticket.heads)],
                     [c.detach() * torch.tensor(m) for c, m in zip(ffn_coefficients(model), ticket.ffn)])
    return model


def matches_masked(model: torch.nn.Module, slim: torch.nn.Module, ticket: Ticket) -> tuple[torch.Tensor, torch.Tensor]:
    """Assert the slim model's logits and greedy tokens (KV cache included) are the masked model's; returns the
    inputs and those logits."""
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(2))
    masked(model, ticket)
    with torch.no_grad():
        expected = model(ids).logits
        assert torch.allclose(slim(ids).logits, expected, atol=1e-5)
    greedy = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(slim.generate(ids[:1], **greedy), model.generate(ids[:1], **greedy))
    return ids, expected


def test_keep_prunes_the_same_number_of_query_heads_in_every_kv_group():
    scores = [torch.tensor([0.9, 0.1, 0.5, 0.2, 0.8, 0.7])]  # groups (0.9, 0.1, 0.5) and (0.2, 0.8, 0.7)
    # One of three heads per group: the lowest of each group goes, although 0.2 outranks 0.1 across the layer.
    assert head_masks(scores, 1 / 3, kv_heads=[2], kv_groups="keep")[0].tolist() == [1, 0, 1, 0, 1, 1]
    assert head_masks(scores, 1 / 3)[0].tolist() == [1, 0, 1, 0, 1, 1]  # without groups: the two lowest
    assert head_masks([torch.tensor([0.9, 0.1, 0.5, 0.6, 0.8, 0.7])], 1 / 3, kv_heads=[2],
                      kv_groups="keep")[0].tolist() == [1, 0, 1, 0, 1, 1]  # 0.6 goes although 0.5 is lower


def test_prune_removes_whole_kv_groups_ranked_by_their_heads_sum():
    scores = [torch.tensor([0.9, 0.1, 0.5, 0.2, 0.8, 0.7])]  # group sums 1.5 and 1.7
    assert head_masks(scores, 0.5, kv_heads=[2], kv_groups="prune")[0].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(EarlyBertError, match="kv_groups 'drop' is unknown"):
        head_masks(scores, 0.5, kv_heads=[2], kv_groups="drop")


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("kv_groups", ["keep", "prune"])
def test_a_uniform_ticket_shrinks_to_a_stock_model_that_generates_as_the_masked_one(family, kv_groups, tmp_path):
    model = searched(tiny_decoder(family))
    ticket = draw_ticket(model, MaskSpec(heads_ratio=1 / 3, ffn_ratio=0.25, ffn_scope="layer", ffn_round_to=8,
                                         kv_groups=kv_groups))
    slim = shrink_model(model, ticket, fold_coefficients=True).eval()
    # keep: 2 of 3 heads in both groups, both KV heads stay; prune: one whole group of 3 heads and its KV head.
    heads, kv = (4, 2) if kv_groups == "keep" else (3, 1)
    assert ticket.layer_heads() == [heads, heads] and ticket.layer_ffn() == [72, 72]
    assert ticket.metadata["kv_groups"] == kv_groups
    attention = slim.model.layers[0].self_attn
    assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.v_proj.out_features,
            attention.o_proj.in_features) == (heads * 16, kv * 16, kv * 16, heads * 16)
    assert count_parameters(slim) == slim_parameter_count(model, ticket)
    ids, expected = matches_masked(model, slim, ticket)
    slim.save_pretrained(tmp_path / "slim")
    config = json.loads((tmp_path / "slim" / "config.json").read_text())
    assert (config["model_type"], config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
            config["intermediate_size"]) == (family, heads, kv, 16, 72)
    assert not (tmp_path / "slim" / REMOTE_CODE_FILE).exists() and "auto_map" not in config
    loaded = load_without_earlybert(tmp_path / "slim", ids, tmp_path)
    assert loaded["class"] == FAMILIES[family][1].__name__ and loaded["tied"] and loaded["heads"] == heads
    assert torch.allclose(loaded["logits"], expected, atol=1e-5)


def tiny_gpt2() -> torch.nn.Module:
    """Four heads of 8 in hidden 32, MLP 48, tied embeddings: GPT-2's fused q/k/v Conv1D layout."""
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_inner=48, n_positions=64,
                                      eos_token_id=0, bos_token_id=0)).eval()


def test_a_gpt2_mlp_only_uniform_ticket_saves_a_stock_gpt2_through_n_inner(tmp_path):
    model = searched(tiny_gpt2())
    ticket = draw_ticket(model, MaskSpec(heads_ratio=0.0, ffn_ratio=0.5, ffn_scope="layer", ffn_round_to=8))
    slim = shrink_model(model, ticket, fold_coefficients=True).eval()
    mlp = slim.transformer.h[0].mlp
    assert ticket.layer_heads() == [4, 4] and tuple(mlp.c_fc.weight.shape) == (32, 24)  # Conv1D: [in, out]
    assert tuple(mlp.c_proj.weight.shape) == (24, 32) and count_parameters(slim) == slim_parameter_count(model, ticket)
    ids, expected = matches_masked(model, slim, ticket)
    slim.save_pretrained(tmp_path / "slim")
    config = json.loads((tmp_path / "slim" / "config.json").read_text())
    assert (config["model_type"], config["n_head"], config["n_inner"]) == ("gpt2", 4, 24)
    assert not (tmp_path / "slim" / REMOTE_CODE_FILE).exists() and "auto_map" not in config
    loaded = load_without_earlybert(tmp_path / "slim", ids, tmp_path)
    assert loaded["class"] == "GPT2LMHeadModel" and loaded["tied"]
    assert torch.allclose(loaded["logits"], expected, atol=1e-5)


def test_a_head_pruned_gpt2_generates_as_the_masked_one_and_loads_with_remote_code(tmp_path):
    # GPT-2 derives the head size from hidden / heads: with heads removed only the slim classes describe it.
    model = searched(tiny_gpt2())
    ticket = draw_ticket(model, MaskSpec(heads_ratio=0.25, ffn_ratio=0.25, ffn_scope="global", ffn_round_to=1))
    slim = shrink_model(model, ticket, fold_coefficients=True).eval()
    attention = slim.transformer.h[1].attn
    assert ticket.layer_heads() == [3, 3] and tuple(attention.c_attn.weight.shape) == (32, 3 * 3 * 8)
    assert tuple(attention.c_proj.weight.shape) == (24, 32)
    ids, expected = matches_masked(model, slim, ticket)
    slim.save_pretrained(tmp_path / "slim")
    config = json.loads((tmp_path / "slim" / "config.json").read_text())
    assert config["model_type"] == "slim_gpt2" and config["layer_num_heads"] == [3, 3]
    loaded = load_without_earlybert(tmp_path / "slim", ids, tmp_path, remote_code=True)
    assert loaded["class"] == "SlimGPT2LMHeadModel" and loaded["tied"]
    assert torch.allclose(loaded["logits"], expected, atol=1e-5)


def test_layers_of_different_sizes_save_slim_classes_that_load_with_remote_code(tmp_path):
    model = searched(tiny_decoder("llama"))
    ticket = draw_ticket(model, MaskSpec(heads_ratio=1 / 3, ffn_ratio=0.25, ffn_scope="global", ffn_round_to=1))
    assert len(set(ticket.layer_ffn())) == 2  # the global FFN cut gives the layers different widths
    slim = shrink_model(model, ticket, fold_coefficients=True).eval()
    slim.save_pretrained(tmp_path / "slim")
    config = json.loads((tmp_path / "slim" / "config.json").read_text())
    assert config["model_type"] == "slim_llama" and config["layer_intermediate_sizes"] == ticket.layer_ffn()
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = masked(model, ticket)(ids).logits
    loaded = load_without_earlybert(tmp_path / "slim", ids, tmp_path, remote_code=True)
    assert loaded["class"] == "SlimLlamaForCausalLM" and loaded["tied"]
    assert torch.allclose(loaded["logits"], expected, atol=1e-5)


def test_a_llama_head_count_that_does_not_divide_the_hidden_size_saves_slim_classes(tmp_path):
    # Eight heads of 16 in hidden 64 over two KV heads; keeping 3 of 4 per group leaves 6 heads, and LlamaConfig
    # refuses 64 % 6 != 0 even with head_dim given, so the stock config cannot describe the model.
    model = searched(tiny_decoder("llama", hidden_size=64, num_attention_heads=8))
    ticket = draw_ticket(model, MaskSpec(heads_ratio=0.25, ffn_ratio=0.25, ffn_scope="layer"))
    assert ticket.layer_heads() == [6, 6]
    shrink_model(model, ticket).save_pretrained(tmp_path / "slim")
    assert json.loads((tmp_path / "slim" / "config.json").read_text())["model_type"] == "slim_llama"
    assert (tmp_path / "slim" / REMOTE_CODE_FILE).is_file()


def test_a_ticket_with_uneven_kv_groups_is_refused_in_one_line():
    model = tiny_decoder("qwen2")
    ticket = Ticket("qwen2", heads=[[1, 1, 0, 1, 0, 0]] * 2, ffn=[[1] * 96] * 2)
    with pytest.raises(EarlyBertError, match=r"keeps \[2, 1\] query heads in the KV groups of layer 0.*kv_groups"):
        shrink_model(model, ticket)


def test_a_random_ticket_keeps_the_learned_tickets_heads_in_every_kv_group():
    model = searched(tiny_decoder("llama"))
    learned = draw_ticket(model, MaskSpec(heads_ratio=1 / 3, ffn_ratio=0.25))
    drawn = random_ticket(model, MaskSpec(heads_ratio=1 / 3, ffn_ratio=0.25), seed=4, like=learned)
    assert [[sum(row[:3]), sum(row[3:])] for row in drawn.heads] == [[2, 2], [2, 2]]
    assert sum(drawn.layer_ffn()) == sum(learned.layer_ffn())
    assert drawn.heads != learned.heads or drawn.ffn != learned.ffn


@pytest.mark.slow
def test_smollm2_shrinks_to_a_stock_llama_that_generates_as_the_masked_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_file()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF quantizer refuses save_pretrained; the weights are fp32
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(loaded.state_dict())
    model.eval()
    searched(model)
    ticket = draw_ticket(model, MaskSpec(heads_ratio=1 / 3, ffn_ratio=0.25, ffn_scope="layer", ffn_round_to=64))
    slim = shrink_model(model, ticket, fold_coefficients=True).eval()
    assert ticket.layer_heads() == [6] * 30 and ticket.layer_ffn() == [1152] * 30  # 9 -> 6 heads over 3 KV heads
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    greedy = dict(max_new_tokens=6, do_sample=False)
    masked(model, ticket)
    assert torch.equal(slim.generate(ids, **greedy), model.generate(ids, **greedy))
    slim.save_pretrained(tmp_path / "slim")
    result = load_without_earlybert(tmp_path / "slim", ids, tmp_path)
    assert result["class"] == "LlamaForCausalLM" and result["tied"] and result["heads"] == 6
    with torch.no_grad():  # 30 layers of folded fp32 weights: logits of about 10 agree to a few 1e-4
        assert torch.allclose(result["logits"], model(ids).logits, atol=1e-3)


def test_a_head_ratio_the_kv_groups_cannot_share_is_refused_with_the_nearest_valid_counts():
    model = tiny_decoder("llama", num_attention_heads=9, num_key_value_heads=3, hidden_size=72, head_dim=8)
    with pytest.raises(EarlyBertError, match=r"heads_ratio=0.25 prunes 2 of 9 heads a layer, but with kv_groups=keep "
                                             r"each of the 3 KV groups must lose the same number: prune 0 or 3 heads "
                                             r"\(heads_ratio 0 or 0.3333\)"):
        draw_ticket(searched(model), MaskSpec(heads_ratio=0.25, ffn_ratio=0.25))
    ticket = draw_ticket(model, MaskSpec(heads_ratio=0.25, ffn_ratio=0.25, kv_groups="prune"))
    assert ticket.layer_heads() == [6, 6]  # a quarter of 3 groups rounds to one whole group
