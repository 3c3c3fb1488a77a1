"""Recipes: pretraining, fine-tuning and the demo, composed from the library."""
