"""MKL's own kernels on AMD CPUs.

torch's CPU wheels do their fp32 matmuls in MKL, which picks its kernels by CPU vendor first: on an AMD CPU it
takes a generic path rather than the AVX2 / AVX-512 kernels it runs on Intel CPUs with the same instruction sets.
On a 2-core Zen 3 our 12-layer MLM training step ran 1.034x faster with them (CI 1.011-1.060; plain matmuls in
one state of that VM about 1.2x, in another within noise: benchmarks/RESULTS.md section 26). MKL asks
one exported function, `mkl_serv_intel_cpu_true`, whether the CPU is Intel's. A tiny library of ours
(`earlybert/csrc/mkl_intel_path.c`, built at install) defines it to say yes; loaded into the process's global
symbol scope before torch, it is the definition torch's MKL binds to, and MKL then chooses by instruction sets
alone, as on Intel. Numerics are those of MKL's Intel kernels: same fp32 products up to rounding order.

Opt-in, with `EARLYBERT_MKL_INTEL_PATH=1`: with MKL's Intel kernels (MKL's conditional numerical reproducibility
off, its default) a run resumed from a checkpoint ended 1 ulp away from the uninterrupted run in CI, where the
default dispatch resumes bit for bit; exact resume comes first. This module imports nothing heavy:
`earlybert/__init__.py` calls `use_mkl_intel_path()` before anything imports torch. It does nothing unless turned
on, where the CPU is not AMD, on platforms other than Linux x86-64, where the library was not
built (no C compiler at install), or where torch was imported before earlybert (MKL has bound its own definition
by then). `status()` says which, for summaries and results JSONs.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import platform
import sys
from pathlib import Path

from earlybert.cpuinfo import cpuinfo

ENV = "EARLYBERT_MKL_INTEL_PATH"
_status = "not tried"


def _library() -> Path | None:
    """The built library next to this file, if the install compiled it."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_mkl_intel_path{suffix}"
        if path.exists():
            return path
    return None


def use_mkl_intel_path(vendor: str | None = None) -> str:
    """Load our `mkl_serv_intel_cpu_true` ahead of torch's MKL on an AMD CPU; return (and keep) what was done."""
    global _status
    vendor = (cpuinfo("vendor_id") or "") if vendor is None else vendor
    library = _library()
    if os.environ.get(ENV, "0") != "1":
        _status = f"off: opt-in ({ENV}=1)"
    elif vendor != "AuthenticAMD":
        _status = f"off: not an AMD CPU ({vendor or 'unknown vendor'})"
    elif sys.platform != "linux" or platform.machine() != "x86_64":
        _status = "off: Linux x86-64 only"
    elif "torch" in sys.modules:
        _status = "off: torch was imported before earlybert"
    elif library is None:
        _status = "off: not built (no C compiler at install)"
    else:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        _status = "on: MKL runs its Intel kernels (AMD CPU)"
    return _status


def status() -> str:
    """What `use_mkl_intel_path` did in this process (for summaries and results JSONs)."""
    return _status
