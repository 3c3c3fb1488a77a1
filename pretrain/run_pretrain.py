"""Pretraining entry point: `deepspeed`, `torchrun` or plain `python` (see earlybert/recipes/pretrain.py)."""

import sys

from earlybert.recipes.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
