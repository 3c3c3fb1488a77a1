"""Process-group set-up for a lone process, and a two-rank job's clean exit."""

import subprocess
import sys

import pytest

from tests.conftest import REPO, clean_env, torchrun

pytestmark = pytest.mark.slow  # integration runs: `make test` runs them, `make test-fast` does not


def test_a_lone_process_ignores_rendezvous_leftovers():
    # accelerate leaves RANK, WORLD_SIZE and MASTER_PORT (no MASTER_ADDR) in a process that ran a HF Trainer;
    # a run started from there is still a lone process, not a launcher's rank looking for MPI.
    code = ("from earlybert.train.distributed import setup_distributed, teardown; d = setup_distributed(); "
            "print(d.rank, d.world_size); teardown()")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=clean_env(RANK="0", WORLD_SIZE="1", MASTER_PORT="29511", DS_ACCELERATOR="cpu"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["0", "1"]


def test_a_clean_two_rank_exit_leaves_no_failure_watcher_running(tmp_path):
    # The watcher polls the store from a daemon thread. Left running at interpreter shutdown, a thread inside the
    # store's C++ call is ended there by pthread_exit, which can abort the rank after its work is done.
    script = tmp_path / "job.py"
    script.write_text("import os, pathlib\n"
                      "from earlybert.train.distributed import SharedFailures, setup_distributed\n"
                      "setup_distributed()\n"
                      "with SharedFailures('job') as failures:\n"
                      "    pass\n"
                      f"pathlib.Path({str(tmp_path)!r}, 'rank' + os.environ['RANK']).write_text("
                      "str(failures.watcher.is_alive()))\n")
    done = torchrun(str(script), env={"DS_ACCELERATOR": "cpu"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # One file per rank: the ranks' stdout interleaves.
    assert [(tmp_path / f"rank{rank}").read_text() for rank in (0, 1)] == ["False", "False"]
