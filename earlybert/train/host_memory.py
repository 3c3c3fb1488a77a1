"""Keep freed host memory in the process, so each training step reuses pages instead of faulting in fresh ones.

glibc hands a freed block above its mmap threshold back to the kernel, and trims the top of its heap once more
than the trim threshold lies free there. A CPU training step allocates and frees the same few hundred megabytes of
activations and gradients every step, so under glibc's defaults it faults many of them in again, zeroed by the
kernel: up to 150,000 minor faults a step for BERT-base at batch 8 x 128 in fp32, about 1.4 us each on the
project's 2-core machine (benchmarks/RESULTS.md section 22). Raising both thresholds (the mmap one to its
maximum, 32 MiB on 64-bit) keeps freed memory for the next step; blocks over 32 MiB are still mapped afresh.
Resident memory then stays near its peak, as under CUDA's caching allocator. Other allocators (musl, macOS, a
preloaded jemalloc or tcmalloc) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's DEFAULT_MMAP_THRESHOLD_MAX
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top before glibc gives any back


def uses_glibc_malloc() -> bool:
    """Whether this process allocates with glibc's malloc (Linux, glibc, no jemalloc or tcmalloc preloaded)."""
    preloaded = os.environ.get("LD_PRELOAD", "")
    return (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
            and "jemalloc" not in preloaded and "tcmalloc" not in preloaded)


def keep_freed_host_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False, with nothing changed, on other allocators."""
    if not uses_glibc_malloc():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
