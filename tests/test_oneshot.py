"""One-shot tickets at step 0: magnitude, Wanda-style and FLAP scores, drawn into the learned tickets' format."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from earlybert.errors import EarlyBertError
from earlybert.models.adapters import get_adapter, layer_sizes
from earlybert.ticket.masks import MaskSpec
from earlybert.ticket.oneshot import oneshot_scores, oneshot_ticket
from earlybert.ticket.shrink import shrink_model
from earlybert.ticket.ticket import Ticket
from tests.conftest import run_earlybert, tiny_model


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                                        num_key_value_heads=2, head_dim=16, intermediate_size=96)).eval()


def recorded_inputs(model, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, every position's input to the attention output and the second FFN linear, rows stacked."""
    seen = []
    for parts in get_adapter(model).layer_parts(model):
        store = ([], [])
        parts.attention_output.register_forward_pre_hook(lambda m, a, s=store[0]: s.append(a[0].flatten(0, -2)))
        parts.ffn_out.register_forward_pre_hook(lambda m, a, s=store[1]: s.append(a[0].flatten(0, -2)))
        seen.append(store)
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    return [(torch.cat(a).double(), torch.cat(f).double()) for a, f in seen]


def test_magnitude_scores_sum_each_heads_output_columns_and_prunes_a_zeroed_head():
    model = tiny_model("bert")
    parts = get_adapter(model).layer_parts(model)
    with torch.no_grad():
        parts[1].attention_output.weight[:, 8:16] = 0  # head 1 of layer 1 (head size 8) writes nothing
    heads, ffn = oneshot_scores(model, "magnitude")
    w = parts[0].attention_output.weight.detach().abs()
    torch.testing.assert_close(heads[0], torch.stack([w[:, h * 8:(h + 1) * 8].sum() for h in range(4)]))
    torch.testing.assert_close(ffn[1], parts[1].ffn_out.weight.detach().abs().sum(0))
    ticket = oneshot_ticket(model, "magnitude", MaskSpec(heads_ratio=0.25, ffn_ratio=0.25, ffn_round_to=1))
    assert ticket.heads[1][1] == 0 and sum(ticket.heads[1]) == 3
    assert ticket.metadata["oneshot"] == "magnitude"


@pytest.mark.parametrize("method", ["wanda", "flap"])
def test_activation_scores_match_the_inputs_recorded_over_every_calibration_batch(method):
    model = tiny_llama()
    batches = [{"input_ids": torch.randint(64, (2, 10), generator=torch.Generator().manual_seed(s))} for s in (1, 2)]
    for b in batches:
        b["attention_mask"] = torch.ones_like(b["input_ids"])
    heads, ffn = oneshot_scores(model, method, batches)
    inputs = recorded_inputs(tiny_llama(), batches)  # a fresh copy: the scoring hooks are gone from `model`
    for layer, parts in enumerate(get_adapter(model).layer_parts(model)):
        for x, linear, got, d in ((inputs[layer][0], parts.attention_output, heads[layer], 16),
                                  (inputs[layer][1], parts.ffn_out, ffn[layer], 1)):
            w = linear.weight.detach().double()
            if method == "wanda":
                columns = w.abs().sum(0) * x.norm(dim=0)
            else:
                columns = (w ** 2).sum(0) * x.var(dim=0, unbiased=False)
            torch.testing.assert_close(got, columns.reshape(-1, d).sum(1).float(), rtol=1e-5, atol=1e-6)


def test_a_oneshot_ticket_keeps_kv_groups_even_and_shrinks_like_a_learned_one(tmp_path):
    model = tiny_llama()
    batches = [{"input_ids": torch.randint(64, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}]
    ticket = oneshot_ticket(model, "wanda", MaskSpec(heads_ratio=1 / 3, ffn_ratio=0.5, ffn_scope="layer"), batches)
    for row in ticket.heads:  # two KV groups of three query heads: one pruned in each
        assert sum(row[:3]) == 2 and sum(row[3:]) == 2
    ticket.save(tmp_path / "ticket.json")
    slim = shrink_model(model, Ticket.load(tmp_path / "ticket.json"))
    assert layer_sizes(slim) == ([4, 4], [48, 48])


def test_activation_methods_refuse_to_score_without_calibration_batches():
    with pytest.raises(EarlyBertError, match="needs calibration batches"):
        oneshot_scores(tiny_model("bert"), "flap", [])


def test_the_oneshot_command_writes_a_ticket_that_earlybert_shrink_takes(tmp_path, pydoc_corpus, minilm_path):
    model = tiny_model("bert", "masked_lm", vocab_size=30522)
    model.save_pretrained(tmp_path / "model")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(tmp_path / "model")
    done = run_earlybert("oneshot", "--model", str(tmp_path / "model"), "--method", "wanda", "--data",
                         str(pydoc_corpus), "--blocks", "4", "--seq-len", "16", "--heads-ratio", "0.5",
                         "--output", str(tmp_path / "ticket.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert Ticket.load(tmp_path / "ticket.json").metadata["calibration_blocks"] == 4
    shrunk = run_earlybert("shrink", "--model", str(tmp_path / "model"), "--ticket", str(tmp_path / "ticket.json"),
                           "--output", str(tmp_path / "slim"))
    assert shrunk.returncode == 0, shrunk.stderr[-2000:]
    again = run_earlybert("oneshot", "--model", str(tmp_path / "model"), "--method", "flap",
                          "--output", str(tmp_path / "other.json"))
    assert again.returncode == 2 and "give calibration text with --data FILE" in again.stderr

