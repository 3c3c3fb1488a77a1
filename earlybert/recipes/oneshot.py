"""`earlybert oneshot`: a ticket at step 0 from one-shot importance (magnitude, Wanda-style, FLAP), in the learned
tickets' format, so that `search.ticket=FILE` trains it and `earlybert compare` can set it beside them."""

from __future__ import annotations

from pathlib import Path

from earlybert.errors import EarlyBertError
from earlybert.ticket.masks import MaskSpec
from earlybert.ticket.oneshot import METHODS
from earlybert.ticket.ticket import Ticket


def run_oneshot(model_dir: str, method: str, output: str, spec: MaskSpec, data: str | None = None,
                gguf_file: str = "", seq_len: int = 128, blocks: int = 32, batch_size: int = 8,
                overwrite: bool = False) -> Ticket:
    """Score the model in `model_dir` by `method` (on blocks of `data` where it needs activations), draw the ticket
    by `spec` and write it to `output`."""
    from earlybert.data.corpus import load_tokenizer
    from earlybert.models.checkpoint import load_gguf_model, load_model
    from earlybert.tasks.language_model import heldout_blocks
    from earlybert.ticket.oneshot import oneshot_ticket

    if method not in METHODS:
        raise EarlyBertError(f"--method {method} is not one of {', '.join(METHODS)}")
    if method != "magnitude" and not data:
        raise EarlyBertError(f"--method {method} scores activations: give calibration text with --data FILE")
    if Path(output).exists() and not overwrite:
        raise EarlyBertError(f"{output} exists: choose another --output or pass --overwrite")
    model = load_gguf_model(model_dir, gguf_file) if gguf_file else load_model(model_dir)
    batches = None
    if method != "magnitude":
        ids = heldout_blocks(data, load_tokenizer(model_dir, gguf_file), seq_len, blocks)
        batches = [{"input_ids": chunk, "attention_mask": chunk.new_ones(chunk.shape)}
                   for chunk in ids.split(batch_size)]
    ticket = oneshot_ticket(model, method, spec, batches, calibration_blocks=0 if batches is None else len(ids),
                            seq_len=seq_len if batches else None)
    ticket.save(output)
    return ticket
