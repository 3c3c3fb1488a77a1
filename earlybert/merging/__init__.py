"""Merging models fine-tuned from one base (RankMean and its baselines)."""
