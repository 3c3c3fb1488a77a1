"""The machine record written into every results JSON tells apart CPUs that share a model name."""

from pathlib import Path

import pytest

from earlybert import cpuinfo
from earlybert.report import machine


@pytest.fixture(autouse=True)
def fresh_cpuinfo():
    # /proc/cpuinfo is read once per process: each test reads its own (fake or real) file.
    cpuinfo._fields.cache_clear()
    yield
    cpuinfo._fields.cache_clear()


def test_family_and_model_read_from_cpuinfo(monkeypatch, tmp_path):
    # Zen 3 and Zen 4 EPYCs both call themselves "AMD EPYC"; only family/model (and the flags) tell them apart.
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    real_path = Path
    monkeypatch.setattr(cpuinfo, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert machine._cpu_family_model() == "25/17"
    assert machine._cpu_name() == "AMD EPYC"
    assert machine._cpu_matrix_features() == "avx2 avx512f avx512_bf16"


def test_no_cpuinfo_gives_empty_family_model(monkeypatch, tmp_path):
    monkeypatch.setattr(cpuinfo, "Path", lambda p: tmp_path / "missing")
    assert machine._cpu_family_model() == ""


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo")
def test_machine_info_has_family_model_on_linux():
    info = machine.machine_info()
    family, _, model = info["cpu_family_model"].partition("/")
    assert family.isdigit() and model.isdigit()
