"""A wheel built from the repository runs the demo from anywhere, without the source tree."""

import subprocess
import sys
import sysconfig
import venv

import pytest

from tests.conftest import REPO, clean_env

pytestmark = pytest.mark.slow  # integration runs: `make test` runs them, `make test-fast` does not


def test_a_wheel_in_a_fresh_venv_runs_the_demo(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("earlybert-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # The dependencies come from the project's environment (a plain path: its editable earlybert stays out).
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True).stdout.strip()
    (env_dir / site.split(str(env_dir) + "/", 1)[1] / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import earlybert; print(earlybert.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
    demo = subprocess.run([str(env_dir / "bin" / "earlybert"), "demo", "--output", "runs/demo", "--pretrain-steps",
                           "30", "--finetune-epochs", "1"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "pretraining time saved against the full model" in demo.stdout
    assert (work / "runs" / "demo" / "report.html").is_file() and (work / "runs" / "demo" / "demo.json").is_file()
