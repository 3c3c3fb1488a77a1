"""`earlybert pretrain` with rank 1 made to fail on purpose, for the multi-rank failure tests (run by torchrun).

FAULT=nan:K puts a NaN into one of rank 1's gradients at its K-th forward (the loss stays finite);
FAULT=checkpoint:K makes rank 1's DeepSpeed shard of its K-th checkpoint fail to write (disk full).
"""

import errno
import os
import sys

import torch

from earlybert.recipes import pretrain
from earlybert.train.objectives import MaskedLMObjective

kind, at = os.environ["FAULT"].split(":")
at, rank1 = int(at), os.environ.get("RANK") == "1"
count = {"forward": 0, "checkpoint": 0}

if kind == "nan":
    real_forward = MaskedLMObjective.forward

    def forward(self, *args, **kwargs):
        count["forward"] += 1
        if rank1 and count["forward"] == at:
            weight = self.model.get_input_embeddings().weight
            handle = weight.register_hook(lambda grad: (handle.remove(), grad * float("nan"))[1])
        return real_forward(self, *args, **kwargs)

    MaskedLMObjective.forward = forward
elif kind == "checkpoint":
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if rank1 and "zero_pp_rank_1_" in str(path) and "optim_states" in str(path):
            count["checkpoint"] += 1
            if count["checkpoint"] == at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    torch.save = save

sys.exit(pretrain.main())
