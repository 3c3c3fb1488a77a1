"""Integrations with other training front ends (Hugging Face Trainer)."""
