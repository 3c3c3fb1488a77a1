"""Process-group set-up for one plain process, `torchrun` or the `deepspeed` launcher, on CPU or GPU."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed() -> DistInfo:
    """Initialise DeepSpeed's process group (gloo on CPU, nccl on GPU); a lone process gets a 1-rank group."""
    # Launchers (torchrun, deepspeed) set RANK and MASTER_ADDR together; RANK alone is left over from something
    # else in this process (accelerate sets RANK, WORLD_SIZE and MASTER_PORT, not MASTER_ADDR).
    lone = "RANK" not in os.environ or "MASTER_ADDR" not in os.environ
    if lone:  # a plain `python` run: DeepSpeed would otherwise look for MPI
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    if lone:  # don't hand this process's rendezvous to subprocesses it starts (they would reuse the port)
        for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank."""
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over ranks (in place), returned for chaining; NCCL reduces a GPU copy."""
    if torch.distributed.get_backend() == "nccl":
        on_device = t.cuda()
        torch.distributed.all_reduce(on_device)
        t.copy_(on_device.cpu())
    else:
        torch.distributed.all_reduce(t)
    return t


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def teardown() -> None:
    """Barrier, then destroy a multi-rank group (gloo jobs can abort at exit without it).

    A one-rank group is kept: DeepSpeed caches its groups, and another run in the same process
    (a notebook, the tests) reuses it.
    """
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        if torch.distributed.get_world_size() > 1:
            torch.distributed.destroy_process_group()
