"""Freed host memory kept in the process: no page faults when a step's allocations come round again."""

import subprocess
import sys
import textwrap

import pytest

from earlybert.train.host_memory import uses_glibc_malloc

# A step's pattern: a hundred 1 MiB blocks and one of 24 MiB, all freed at the end; five steps after three to settle.
PAGES_PER_STEP = (100 + 24) * 1024 // 4  # 4 KiB pages
STEPS = textwrap.dedent("""
    import ctypes, resource, sys
    import torch
    from earlybert.train.host_memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_host_memory
    if sys.argv[1] == "keep":
        kept = keep_freed_host_memory()
    else:  # glibc's starting thresholds, held fixed (its defaults move them with what is freed, unpredictably)
        kept = None
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        ctypes.CDLL(None).mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    def step():
        blocks = [torch.ones(256 * 1024) for _ in range(100)]
        big = torch.ones(6 * 1024 * 1024)
        del blocks, big
    step(); step(); step()
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
    given_back_kept, given_back_faults = faults("give back")
    kept, kept_faults = faults("keep")
    assert kept == "True" and given_back_kept == "None"
    assert given_back_faults >= 5 * PAGES_PER_STEP // 2  # memory given back: the steps fault it in again
    # Over five steps less than a third of what one step touches: no step faults its memory in again (the heap may
    # still grow once where freed blocks lie in another order).
    assert kept_faults < PAGES_PER_STEP // 3, (kept_faults, given_back_faults)


def test_other_allocators_are_left_alone(monkeypatch):
    from earlybert.train import host_memory

    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert not host_memory.uses_glibc_malloc()
    assert host_memory.keep_freed_host_memory() is False
