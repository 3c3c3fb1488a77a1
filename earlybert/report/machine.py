"""What numbers were measured on: CPU, threads, library versions, device, date."""

from __future__ import annotations

import platform
from datetime import date

from earlybert.cpuinfo import cpuinfo


def _cpu_name() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def _cpu_family_model() -> str:
    """x86 CPU family and model ("25/1" is AMD Zen 3, "25/17" Zen 4): one model name can cover both; "" elsewhere."""
    family, model = cpuinfo("cpu family"), cpuinfo("model")
    return f"{family}/{model}" if family and model else ""


def _cpu_matrix_features() -> str:
    """The CPU flags that decide bf16 matmul speed (a CPU without them runs bf16 far slower than fp32)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in (cpuinfo("flags") or "").split() if f in wanted)


def machine_info() -> dict[str, str]:
    """The machine and versions a measurement ran on (written into every results JSON)."""
    import deepspeed
    import torch
    import transformers

    from earlybert import mkl_dispatch

    return {"cpu": _cpu_name(), "cpu_family_model": _cpu_family_model(), "cpu_features": _cpu_matrix_features(),
            "threads": str(torch.get_num_threads()), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "deepspeed": deepspeed.__version__,
            "mkl_intel_path": mkl_dispatch.status(), "date": date.today().isoformat(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
