"""Process-group set-up for a lone process."""

import subprocess
import sys

from tests.conftest import REPO, clean_env


def test_a_lone_process_ignores_rendezvous_leftovers():
    # accelerate leaves RANK, WORLD_SIZE and MASTER_PORT (no MASTER_ADDR) in a process that ran a HF Trainer;
    # a run started from there is still a lone process, not a launcher's rank looking for MPI.
    code = ("from earlybert.train.distributed import setup_distributed, teardown; d = setup_distributed(); "
            "print(d.rank, d.world_size); teardown()")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=clean_env(RANK="0", WORLD_SIZE="1", MASTER_PORT="29511", DS_ACCELERATOR="cpu"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["0", "1"]
