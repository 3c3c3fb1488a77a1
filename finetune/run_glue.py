"""GLUE fine-tuning entry point: `deepspeed`, `torchrun` or plain `python` (see earlybert/recipes/finetune.py)."""

import sys

from earlybert.recipes.finetune import main

if __name__ == "__main__":
    sys.exit(main(["glue", *sys.argv[1:]]))
