"""Freed host memory kept in the process: no page faults when a step's allocations come round again."""

import subprocess
import sys
import textwrap

import pytest

from earlybert.train.host_memory import uses_glibc_malloc

# A step's pattern: a hundred 1 MiB blocks and one of 24 MiB, all freed at the end; five steps after two to settle.
STEPS = textwrap.dedent("""
    import resource, sys
    import torch
    from earlybert.train.host_memory import keep_freed_host_memory
    kept = keep_freed_host_memory() if sys.argv[1] == "keep" else None
    def step():
        blocks = [torch.ones(256 * 1024) for _ in range(100)]
        big = torch.ones(6 * 1024 * 1024)
        del blocks, big
    step(); step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True).stdout
    kept, count = out.split()
    return kept, int(count)


@pytest.mark.skipif(not uses_glibc_malloc(), reason="glibc's malloc only")
def test_kept_memory_takes_the_page_faults_out_of_repeated_steps():
    default_kept, default_faults = faults("default")
    kept, kept_faults = faults("keep")
    assert kept == "True" and default_kept == "None"
    assert default_faults >= 1000  # under glibc's defaults this pattern faults freed memory in again
    assert kept_faults < 100, (kept_faults, default_faults)


def test_other_allocators_are_left_alone(monkeypatch):
    from earlybert.train import host_memory

    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert not host_memory.uses_glibc_malloc()
    assert host_memory.keep_freed_host_memory() is False
