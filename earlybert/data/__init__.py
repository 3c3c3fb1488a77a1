"""Pretraining data: corpora, tokenizers, packed blocks, sampling and masking."""
