"""MKL's Intel kernels on AMD CPUs: when our vendor check is loaded, what wins the link, and the same products."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from earlybert import mkl_dispatch

pytestmark = pytest.mark.skipif(mkl_dispatch._library() is None or sys.platform != "linux",
                                reason="the library is built on Linux where the install had a C compiler")

# Runs in a fresh interpreter: whether torch is already imported is the point. Prints a JSON line.
# The package is stood up without running its __init__, which would already call the module (and import torch).
PROBE = """
import ctypes, json, sys, types
package = types.ModuleType("earlybert")
package.__path__ = [sys.argv[2]]
sys.modules["earlybert"] = package
from earlybert import mkl_dispatch
torch_first = sys.argv[1] == "torch-first"
if torch_first:
    import torch
status = mkl_dispatch.use_mkl_intel_path(vendor="AuthenticAMD")
import torch
def address(lib):  # None where the symbol is not in that scope
    try:
        return ctypes.cast(lib.mkl_serv_intel_cpu_true, ctypes.c_void_p).value
    except AttributeError:
        return None
ours = address(ctypes.CDLL(str(mkl_dispatch._library())))
gen = torch.Generator().manual_seed(0)
x, w = torch.randn(256, 768, generator=gen, requires_grad=True), torch.randn(3072, 768, generator=gen)
torch.nn.functional.linear(x, w).square().sum().backward()
print(json.dumps({"status": status, "bound_to_ours": address(ctypes.CDLL(None)) == ours,
                  "product": (x.detach() @ w.T)[:4, :4].tolist(), "input_grad": x.grad[:4, :4].tolist()}))
"""


def probe(order: str, switch: str | None = "1") -> dict:
    """The probe's JSON line, run with earlybert imported first ("earlybert-first") or torch ("torch-first"), with
    the opt-in variable set to `switch` (None: unset)."""
    package = str(Path(mkl_dispatch.__file__).parent)
    env = {k: v for k, v in os.environ.items() if k != mkl_dispatch.ENV}
    env.update({mkl_dispatch.ENV: switch} if switch else {})
    done = subprocess.run([sys.executable, "-c", PROBE, order, package], capture_output=True,
                          text=True, timeout=120, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loaded_before_torch_it_is_the_definition_the_process_binds_and_products_agree():
    on, off = probe("earlybert-first"), probe("torch-first")
    assert on["status"].startswith("on:") and on["bound_to_ours"]
    assert off["status"] == "off: torch was imported before earlybert" and not off["bound_to_ours"]
    for key in ("product", "input_grad"):  # MKL's Intel kernels: the same fp32 products up to rounding order
        for row_on, row_off in zip(on[key], off[key], strict=True):
            assert row_on == pytest.approx(row_off, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("switch", [None, "0"])
def test_off_unless_turned_on(switch):
    # Opt-in: with MKL's Intel kernels a resumed run can end an ulp away from the uninterrupted one.
    result = probe("earlybert-first", switch)
    assert result["status"] == f"off: opt-in ({mkl_dispatch.ENV}=1)" and not result["bound_to_ours"]


def test_does_nothing_on_other_vendors(monkeypatch):
    monkeypatch.setenv(mkl_dispatch.ENV, "1")
    assert mkl_dispatch.use_mkl_intel_path(vendor="GenuineIntel") == "off: not an AMD CPU (GenuineIntel)"
    assert mkl_dispatch.status() == "off: not an AMD CPU (GenuineIntel)"
