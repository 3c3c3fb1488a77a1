"""Held-out perplexity of a causal LM over fixed blocks of a text file (`earlybert evaluate lm`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from earlybert.data.corpus import DataConfig, document_separator, document_stream
from earlybert.errors import EarlyBertError


def heldout_blocks(path: str, tokenizer, seq_len: int, max_blocks: int) -> torch.Tensor:
    """The first `max_blocks` non-overlapping blocks of `seq_len` tokens of the file's documents, each followed by
    the tokenizer's document separator (the same stream `earlybert pretrain` trains on)."""
    separator, backend = document_separator(tokenizer), tokenizer.backend_tokenizer
    stream: list[int] = []
    for doc in document_stream(DataConfig(train_files=[path])):
        stream.extend(backend.encode(doc, add_special_tokens=False).ids)
        stream.append(separator)
        if len(stream) >= seq_len * max_blocks:
            break
    count = min(max_blocks, len(stream) // seq_len)
    if count == 0:
        raise EarlyBertError(f"{path} holds {len(stream)} tokens, fewer than one block of {seq_len}: give more text "
                             "or a smaller --seq-len")
    return torch.from_numpy(np.asarray(stream[:count * seq_len], dtype=np.int64).reshape(count, seq_len))


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor, batch_size: int = 8) -> dict:
    """Mean next-token loss over every position but each block's last, and its exponential."""
    model.eval()
    device = next(model.parameters()).device
    summed, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start:start + batch_size].to(device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
        summed += float(F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    loss = summed / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count, "blocks": len(blocks),
            "seq_len": blocks.shape[1]}


def evaluate_lm_file(model_dir: str, data: str, seq_len: int = 128, max_blocks: int = 200, batch_size: int = 8,
                     gguf_file: str = "") -> dict:
    """Held-out perplexity of the causal LM in `model_dir` (or a GGUF file in it) on the text file `data`."""
    from earlybert.data.corpus import load_tokenizer
    from earlybert.models.adapters import adapter_for_type, supported_families
    from earlybert.models.checkpoint import load_gguf_model, load_model

    if gguf_file:
        model = load_gguf_model(model_dir, gguf_file)
    else:
        config = Path(model_dir) / "config.json"
        if not config.is_file():
            raise EarlyBertError(f"{model_dir} is not a model folder (no config.json): give a save_pretrained folder "
                                 "or --gguf-file FILE in it")
        model_type = json.loads(config.read_text()).get("model_type", "").removeprefix("slim_")
        if not adapter_for_type(model_type).decoder:
            decoders = ", ".join(f for f in supported_families() if adapter_for_type(f).decoder)
            raise EarlyBertError(f"{model_dir} holds a {model_type} encoder: evaluate lm scores causal LMs "
                                 f"({decoders})")
        model = load_model(model_dir, task="causal_lm")
    tokenizer = load_tokenizer(model_dir, gguf_file)
    blocks = heldout_blocks(data, tokenizer, seq_len, max_blocks)
    return {**perplexity(model, blocks, batch_size), "model": str(model_dir), "data": str(data)}
