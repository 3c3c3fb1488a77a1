"""What numbers were measured on: processor, threads, library versions, device, date."""

from __future__ import annotations

import platform
from datetime import date


def machine_info() -> dict[str, str]:
    """The machine and versions a measurement ran on (written into every results JSON)."""
    import deepspeed
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {"processor": platform.processor() or platform.machine(), "threads": str(torch.get_num_threads()),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": deepspeed.__version__,
            "date": date.today().isoformat(), "device": torch.cuda.get_device_name() if cuda else "cpu",
            "cuda": torch.version.cuda or ""}
