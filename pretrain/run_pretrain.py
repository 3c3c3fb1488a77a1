"""Pretraining entry point: `deepspeed`, `torchrun` or plain `python` (see earlybert/pretrain.py)."""

import sys

from earlybert.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
