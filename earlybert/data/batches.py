"""Per-step batches for the trainer: `PretrainBatches` (phases of packed or streamed blocks, masked on the fly)
and `ExampleBatches` (tokenized task examples). Both give this rank's micro-batches of optimizer step `step`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from earlybert.data.corpus import BlockSampler, StreamingBlocks, iter_dataset_documents, mask_tokens, sentence_pairs
from earlybert.data.prepare import PreparedCorpus


def rank_slices(ids: np.ndarray, grad_accum: int, micro: int, rank: int, world: int) -> list[np.ndarray]:
    """This rank's sample ids of each micro-batch round: rank r takes the r-th slice of every round."""
    return [ids[(m * world + rank) * micro:(m * world + rank + 1) * micro] for m in range(grad_accum)]


@dataclass
class PhaseSpan:
    """Where one phase sits in the run: its steps, the sample numbers it starts at, how it samples."""

    first_step: int
    end_step: int
    first_sample: int
    seq_len: int
    micro_batch_size: int
    sampler: BlockSampler
    blocks: Callable[[np.ndarray], np.ndarray]
    """Local sample ids -> token blocks."""


class PretrainBatches:
    """Masked-LM (optionally NSP) or causal-LM batches through the phases; masking is keyed by sample id, so it
    is the same whatever the number of ranks, and never repeats across phases."""

    def __init__(self, data_cfg, phases: list, grad_accum: int, tokenizer, corpus: PreparedCorpus | None, rank: int,
                 world: int, seed: int, is_main: bool = True, causal: bool = False):
        self.cfg, self.tokenizer, self.seed, self.causal = data_cfg, tokenizer, seed, causal
        self.grad_accum, self.rank, self.world = grad_accum, rank, world
        sources: dict[int, tuple[int | None, Callable]] = {}
        for phase in phases:
            if phase.seq_len not in sources:
                sources[phase.seq_len] = self._source(corpus, phase.seq_len, is_main)
        self.spans, step, sample = [], 0, 0
        for phase in phases:
            count, blocks = sources[phase.seq_len]
            global_batch = phase.micro_batch_size * grad_accum * world
            sampler = BlockSampler(count or 1, global_batch, seed)
            take = blocks if count is None else (lambda ids, b=blocks, s=sampler: b[s.block_ids(ids)])
            self.spans.append(PhaseSpan(step, step + phase.steps, sample, phase.seq_len, phase.micro_batch_size,
                                        sampler, take))
            step, sample = step + phase.steps, sample + phase.steps * global_batch

    def _source(self, corpus: PreparedCorpus | None, seq_len: int, is_main: bool) -> tuple[int | None, Callable]:
        if corpus is None:
            stream = StreamingBlocks(lambda: iter_dataset_documents(self.cfg), self.tokenizer, seq_len, not self.causal)
            note = f"blocks of {seq_len} tokens streamed from {self.cfg.dataset}"
            count, source = None, stream.take
        else:
            packed = corpus.blocks(seq_len, self.tokenizer, framed=not self.causal)
            note = (f"{corpus.meta['documents']} documents, {len(packed)} blocks of {seq_len} tokens "
                    f"(memory-mapped from {corpus.folder.name})")
            count, source = len(packed), packed
        if is_main:
            print(f"data: {note}; vocabulary {len(self.tokenizer)}", flush=True)
        return count, source

    def __call__(self, step: int) -> list[dict[str, torch.Tensor]]:
        span = next(s for s in self.spans if s.first_step <= step < s.end_step)
        ids = span.first_sample + span.sampler.sample_ids(step - span.first_step)
        return [self._batch(span, mine) for mine in
                rank_slices(ids, self.grad_accum, span.micro_batch_size, self.rank, self.world)]

    def _batch(self, span: PhaseSpan, sample_ids: np.ndarray) -> dict[str, torch.Tensor]:
        blocks = span.blocks(sample_ids - span.first_sample)
        if self.causal:  # every position predicts the next token; the objective shifts
            input_ids = torch.from_numpy(blocks.astype(np.int64))
            return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}
        if self.cfg.nsp:
            blocks, types, nsp_labels = sentence_pairs(blocks, sample_ids, self.tokenizer, self.seed)
        batch = mask_tokens(blocks, sample_ids, self.tokenizer, self.cfg.mlm_probability, self.seed,
                            len(self.tokenizer))
        if self.cfg.nsp:
            batch["token_type_ids"] = torch.from_numpy(types)
            batch["next_sentence_label"] = torch.from_numpy(nsp_labels)
        return batch


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the columns past the batch's longest example: the batch padded to its own longest row rather than
    to max_seq_len (right padding; a left-padded batch is returned as it is)."""
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return batch
    width, longest = mask.shape[1], int(mask.sum(dim=1).max())
    if longest == width or mask[:, longest:].any():
        return batch
    return {k: v[:, :longest] if v.ndim >= 2 and v.shape[1] == width else v for k, v in batch.items()}


class ExampleBatches:
    """Rows of tokenized task features, shuffled by a seeded sampler; optionally padded per batch and grouped by
    length."""

    def __init__(self, features: dict[str, torch.Tensor], micro_batch_size: int, grad_accum: int, rank: int,
                 world: int, seed: int, dynamic_padding: bool = True, group_by_length: bool = False):
        self.features, self.micro, self.grad_accum, self.rank, self.world = (features, micro_batch_size, grad_accum,
                                                                             rank, world)
        self.dynamic_padding = dynamic_padding
        self.count = len(next(iter(features.values())))
        lengths = features["attention_mask"].sum(dim=1).numpy() if group_by_length else None
        self.sampler = BlockSampler(self.count, micro_batch_size * grad_accum * world, seed, lengths)

    def __call__(self, step: int) -> list[dict[str, Any]]:
        ids = self.sampler.block_ids(self.sampler.sample_ids(step))
        batches = [{k: v[torch.from_numpy(rows)] for k, v in self.features.items()}
                   for rows in rank_slices(ids, self.grad_accum, self.micro, self.rank, self.world)]
        return [trim_padding(b) for b in batches] if self.dynamic_padding else batches
