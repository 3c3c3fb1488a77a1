"""The embedded demo: the core ticket pipeline on a small random BERT, end to end on CPU."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

from earlybert.checkpoint import check_output_dir, write_dir_atomically
from earlybert.coefficients import attach_coefficients, ffn_coefficients, head_coefficients, set_coefficients
from earlybert.detector import EarlyBirdDetector
from earlybert.masks import MaskSpec, draw_ticket
from earlybert.report_text import model_info_lines
from earlybert.shrink import shrink_model


def run_core_demo(output: str = "runs/demo", overwrite: bool = False, seed: int = 0) -> dict:
    """Attach coefficients, let them drift until the detector fires, shrink with folding, save, reload, compare."""
    check_output_dir(output, overwrite)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=2000, hidden_size=128, num_hidden_layers=4, num_attention_heads=8,
                        intermediate_size=512, max_position_embeddings=128)
    model = BertForMaskedLM(config).eval()
    attach_coefficients(model)
    print("\n".join(model_info_lines(model)))

    # Stand-in for a search: coefficients decay towards a fixed per-unit target, with shrinking noise,
    # so the masks settle and the detector fires the way it does during real training.
    spec, detector = MaskSpec(), EarlyBirdDetector(window=5, threshold=0.1)
    targets = [torch.rand_like(c) for c in head_coefficients(model) + ffn_coefficients(model)]
    step = 0
    while not detector.fired and step < 2000:
        step += 10
        noise = 1.0 / step
        with torch.no_grad():
            for c, t in zip(head_coefficients(model) + ffn_coefficients(model), targets):
                c.mul_(0.9).add_(0.1 * t + noise * torch.randn_like(c))
        ticket = draw_ticket(model, spec, step=step)
        detector.update(step, [torch.tensor(h) for h in ticket.heads], [torch.tensor(f) for f in ticket.ffn])
        last = detector.history[-1]
        if last.heads_distance is not None:
            print(f"step {step:4d}: mask distance heads {last.heads_distance:.3f}, ffn {last.ffn_distance:.3f}")
    ticket = draw_ticket(model, spec, step=step, fired=detector.fired, distance_history=detector.history_dicts())
    print(f"early bird drawn at step {step}: heads kept {ticket.layer_heads()}, ffn kept {ticket.layer_ffn()}")

    # The masked model: pruned units' coefficients set to 0, kept ones keep their learned value.
    masks_h = [torch.tensor(h) for h in ticket.heads]
    masks_f = [torch.tensor(f) for f in ticket.ffn]
    set_coefficients(model, [m * c for m, c in zip(masks_h, head_coefficients(model))],
                     [m * c for m, c in zip(masks_f, ffn_coefficients(model))])
    inputs = torch.randint(0, config.vocab_size, (4, 64))
    with torch.no_grad():
        masked_logits = model(inputs).logits
    start = time.perf_counter()
    slim = shrink_model(model, ticket, fold_coefficients=True)
    shrink_s = time.perf_counter() - start

    out = Path(output)

    def write(tmp: Path) -> None:
        (tmp / "slim").mkdir()
        slim.save_pretrained(tmp / "slim")
        ticket.save(tmp / "ticket.json")

    write_dir_atomically(out, write, overwrite=overwrite)
    reloaded = AutoModelForMaskedLM.from_pretrained(out / "slim").eval()
    with torch.no_grad():
        diff = (reloaded(inputs).logits - masked_logits).abs().max().item()
    print("\n".join(model_info_lines(reloaded)))
    print(f"shrink took {shrink_s:.2f}s; slim checkpoint in {out / 'slim'}, ticket in {out / 'ticket.json'}")
    print(f"max |masked - reloaded slim| logits difference: {diff:.2e}")
    if diff > 1e-4:
        raise RuntimeError(f"slim model disagrees with the masked model by {diff}")
    return {"fired_at": detector.fired_at, "max_abs_diff": diff, "ticket": ticket}
