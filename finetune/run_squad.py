"""SQuAD fine-tuning entry point: `deepspeed`, `torchrun` or plain `python` (see earlybert/finetune.py)."""

import sys

from earlybert.finetune import main

if __name__ == "__main__":
    sys.exit(main(["squad", *sys.argv[1:]]))
