"""Process-group set-up for one plain process, `torchrun` or the `deepspeed` launcher, on CPU or GPU."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
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


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


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


_FAILURE_KEY = "earlybert/failure"


class SharedFailures:
    """A job's body: one rank's exception reaches every rank, and the group is torn down on a clean exit.

    The failing rank publishes its one-line cause in the process group's store; a watcher thread on every other
    rank prints the same line and exits (code 2) within a second, even while it waits in a collective
    (a barrier, DeepSpeed's checkpoint barrier) that the failed rank will never reach.
    """

    def __init__(self, prog: str, poll_s: float = 0.2):
        self.prog, self.poll_s, self.done = prog, poll_s, threading.Event()
        # The default store is what the launcher's rendezvous created; torch exposes it only privately.
        multi = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        self.store = torch.distributed.distributed_c10d._get_default_store() if multi else None
        self.watcher = None
        if self.store is not None:
            self.watcher = threading.Thread(target=self._watch, daemon=True, name="earlybert-failures")
            self.watcher.start()

    def _reported(self) -> tuple[int, str] | None:
        """(rank, cause) of the first failure a rank published, if any."""
        try:
            if self.store.check([_FAILURE_KEY]):
                rank, message = json.loads(self.store.get(_FAILURE_KEY))
                return rank, message
        except Exception:  # the store went away with the job
            return None
        return None

    def _leave_with(self, rank: int, message: str) -> None:
        print(f"{self.prog}: error: {message} (rank {rank})", file=sys.stderr, flush=True)
        os._exit(2)

    def _watch(self) -> None:
        while not self.done.wait(self.poll_s):
            reported = self._reported()
            if reported is not None and not self.done.is_set():  # (this rank reports its own failure itself)
                self._leave_with(*reported)

    def __enter__(self) -> SharedFailures:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        self.done.set()
        if self.watcher is not None:
            # Joined, not left to die at exit: a daemon thread that is inside the store's C++ call when the
            # interpreter shuts down is ended by pthread_exit there, which aborts the process.
            self.watcher.join(timeout=5.0)
        if error is None:
            teardown()
        elif self.store is not None:  # the others learn of it; a barrier here could wait forever
            reported = self._reported()
            if reported is not None and reported[0] != torch.distributed.get_rank():
                self._leave_with(*reported)  # this error (a peer gone from a collective) follows from that one
            self.store.set(_FAILURE_KEY, json.dumps([torch.distributed.get_rank(), str(error)]))
        return False


def failed_exit_code() -> int:
    """2, the exit code of refused or failed runs. A rank of a multi-rank job that failed ends here and now:
    a normal interpreter exit can wait on the process group's threads while the other ranks have left."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(1.0)  # the other ranks' watchers poll every 0.2 s: let them read the cause before peers vanish
        os._exit(2)
    return 2
