"""What a ticket at the paper's ratios removes from each family's base model: parameters and training FLOPs.

Counted, not timed: each published base config is built on the meta device (no weights, nothing
downloaded); a ticket pruning 1/3 of the heads and 40% of the FFN neurons of every layer is counted
with `slim_parameter_count`, and the FLOP model gives training FLOPs per token (sequence
classification, seq 128). No ticket touches the embedding: its share of the parameters is shown.

    python -m benchmarks.family_savings        # writes benchmarks/results/family_savings.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from benchmarks.common import print_table, write_json
from earlybert.models.adapters import adapter_for_type
from earlybert.models.flops import ModelShape, count_parameters, slim_parameter_count, training_flops_per_token
from earlybert.ticket.ticket import Ticket

# The published base configurations (sizes only; what differs from each config class's defaults).
BASE = {
    "bert": dict(vocab_size=30522),
    "roberta": dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1),
    "xlm-roberta": dict(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1),
    "electra": dict(vocab_size=30522, embedding_size=768),
    "distilbert": dict(vocab_size=30522, n_layers=6),
    "deberta-v2": dict(vocab_size=128100, relative_attention=True, pos_att_type=["p2c", "c2p"],
                       position_buckets=256, max_relative_positions=-1, share_att_key=True,
                       norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0),
    "modernbert": dict(vocab_size=50368, num_hidden_layers=22, intermediate_size=1152),
}
BASE_SIZES = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def paper_ticket(model_type: str, layers: int, heads: int, ffn: int) -> Ticket:
    """1/3 of the heads of every layer and 40% of the FFN neurons of every layer pruned (the lowest indices)."""
    pruned_heads, pruned_ffn = round(heads / 3), round(0.4 * ffn)
    return Ticket(model_type, heads=[[0] * pruned_heads + [1] * (heads - pruned_heads)] * layers,
                  ffn=[[0] * pruned_ffn + [1] * (ffn - pruned_ffn)] * layers)


def family_row(family: str, seq_len: int) -> dict:
    adapter = adapter_for_type(family)
    config_cls = adapter.hf_classes["base"].config_class
    sizes = {} if family == "distilbert" else dict(BASE_SIZES)
    config = config_cls(**{**sizes, **BASE[family]})
    with torch.device("meta"):
        model = adapter.hf_classes["sequence_classification"](config)
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    ffn = getattr(config, adapter.layout.ffn_width)
    ticket = paper_ticket(family, layers, heads, ffn)
    shape = ModelShape.of(model)
    slim_shape = replace(shape, layer_heads=ticket.layer_heads(), layer_ffn=ticket.layer_ffn())
    params, slim_params = count_parameters(model), slim_parameter_count(model, ticket)
    flops, slim_flops = (training_flops_per_token(s, seq_len) for s in (shape, slim_shape))
    return {"family": family, "layers": layers, "params": params, "slim_params": slim_params,
            "params_saved": 1 - slim_params / params,
            "embedding_share": model.get_input_embeddings().weight.numel() / params,
            "train_flops_per_token": flops, "slim_train_flops_per_token": slim_flops,
            "flops_saved": 1 - slim_flops / flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/family_savings.json")
    args = parser.parse_args()
    rows = [family_row(f, args.seq) for f in BASE]
    print_table(["family", "layers", "params", "slim params", "params saved", "embedding share", "FLOPs saved"],
                [[r["family"], r["layers"], f"{r['params'] / 1e6:.1f}M", f"{r['slim_params'] / 1e6:.1f}M",
                  f"{r['params_saved']:.1%}", f"{r['embedding_share']:.1%}", f"{r['flops_saved']:.1%}"]
                 for r in rows])
    write_json(args.out, {"seq_len": args.seq, "ticket": "1/3 heads per layer, 40% FFN per layer", "rows": rows})


if __name__ == "__main__":
    main()
