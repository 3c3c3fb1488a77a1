"""The AdamW update alone over a BERT-base-shaped model's parameters: torch's per-tensor, multi-tensor (foreach)
and fused implementations, and DeepSpeed's CPU Adam, each against the per-tensor reference after the same steps.

Why: the trainer picks torch's fused AdamW wherever the build has it (`earlybert.train.engine.adamw`); this
measures that choice against the alternatives a DeepSpeed user would reach for, on the parameters of the MLM
benchmarks (the tied 23.8M-parameter embedding included). Every variant updates its own copy of the same
parameters with the same gradients; the variants take turns each round.

    python -m benchmarks.optimizers [--layers 12] [--rounds 9] [--out benchmarks/results/optimizers.json]
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertConfig, BertForMaskedLM

from benchmarks.common import alternate, paired, print_table, range_text, write_json
from earlybert.train.engine import adamw, implementation
from earlybert.train.trainer_config import TrainConfig

HYPER = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.01}


def deepspeed_cpu_adam(params: list[torch.nn.Parameter]):
    """DeepSpeed's CPU Adam in AdamW mode, or None where its extension cannot be built here."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, adamw_mode=True, **HYPER)
    except Exception as error:  # noqa: BLE001  (a missing compiler or an unsupported platform: reported, skipped)
        print(f"DeepSpeed CPU Adam unavailable: {type(error).__name__}: {error}")
        return None


def trainers_adamw(params: list[torch.nn.Parameter]) -> torch.optim.AdamW:
    """The optimizer the trainer builds (`earlybert.train.engine.adamw`), with the same hyperparameters."""
    train = TrainConfig(lr=HYPER["lr"], betas=list(HYPER["betas"]), eps=HYPER["eps"])
    return adamw([{"params": params, "weight_decay": HYPER["weight_decay"]}], train)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--out", default="benchmarks/results/optimizers.json")
    args = p.parse_args()
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(num_hidden_layers=args.layers))
    start = [q.detach().clone() for q in model.parameters()]  # unique tensors: the decoder shares the embedding
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(q.shape, generator=gen) * 1e-2 for q in start]

    def copy() -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(q.clone()) for q in start]
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        return params

    trainers = trainers_adamw(trainers_params := copy())
    choice = f"{implementation(trainers)} (the trainer's)"
    makers = {"per-tensor (reference)": lambda ps: torch.optim.AdamW(ps, foreach=False, fused=False, **HYPER),
              "foreach": lambda ps: torch.optim.AdamW(ps, foreach=True, **HYPER),
              "DeepSpeed CPU Adam": deepspeed_cpu_adam}
    params = {name: copy() for name in makers}
    optimizers = {name: make(params[name]) for name, make in makers.items()}
    optimizers = {name: opt for name, opt in optimizers.items() if opt is not None}
    params[choice], optimizers[choice] = trainers_params, trainers
    spread = alternate({name: opt.step for name, opt in optimizers.items()}, args.rounds)
    steps = args.rounds + 2  # the warm-up steps update too, alike for all
    reference = params["per-tensor (reference)"]
    results: dict = {"layers": args.layers, "params": sum(q.numel() for q in start), "steps": steps,
                     "hyperparameters": HYPER, "variants": {}}
    rows = []
    for name in optimizers:
        gap = max((a - b).abs().max().item() for a, b in zip(params[name], reference, strict=True))
        speed = paired(spread, "per-tensor (reference)", name)
        results["variants"][name] = {"step_s": spread[name], "speed_over_reference_paired": speed,
                                     "max_abs_difference_from_reference": gap}
        rows.append([name, range_text(spread[name]), range_text(speed), f"{gap:.1e}"])
    results["choice"] = choice
    print(f"\nAdamW update over {results['params'] / 1e6:.1f}M parameters ({args.layers} layers), {steps} steps")
    print_table(["implementation", "s per update", "speed over per-tensor (paired)", "max |diff| from per-tensor"],
                rows)
    write_json(args.out, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
