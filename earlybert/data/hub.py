"""`datasets.load_dataset` for Hub names, with a one-line error when the name cannot be loaded."""

from __future__ import annotations

from typing import Any

from earlybert.errors import EarlyBertError


def load_hub_dataset(name: str, *args: Any, hint: str, **kwargs: Any):
    """`load_dataset(name, ...)`; offline, misspelled or unreachable names raise EarlyBertError with `hint`."""
    from datasets import load_dataset

    try:
        return load_dataset(name, *args, **kwargs)
    except Exception as e:  # datasets raises a dozen types for these (offline, not found, connection, config)
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise EarlyBertError(f"cannot load {name!r} from the Hugging Face Hub ({type(e).__name__}: {reason}): "
                             f"{hint}") from None
