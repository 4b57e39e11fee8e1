"""``pyrovae fit --data arr.npy`` streamed from disk in a real process, killed with SIGKILL
mid-epoch, then ``--resume``: the same checkpoint, tensor for tensor, as the uninterrupted
run, and as the same file held on the device."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pyrovae.training.checkpoint import load_checkpoint
from tests.cli.helpers import environ
from tests.training.test_processes import _assert_same, _trained

#: a registered objective that sleeps in each step: room to kill the process mid-epoch
SLOW = textwrap.dedent('''
    import os, time
    from pyrovae.infer.objectives import ELBO
    from pyrovae.registry import register_objective

    @register_objective("slow-elbo")
    class SlowELBO(ELBO):
        def __call__(self, model, guide, batch, step=None):
            time.sleep(float(os.environ.get("SLOW_STEP", "0")))
            return super().__call__(model, guide, batch, step)
''')

FLAGS = ["--import", "slowobj", "--objective", "slow-elbo", "--epochs", "2", "--batch-size", "10", "--seed", "5",
         "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "0", "--no-progress"]


def _start(folder, out, *extra, stream=True, slow=0.0):
    env = environ({"PYTHONHASHSEED": "0", "SLOW_STEP": str(slow), **({"PYROVAE_MAX_BYTES": "0"} if stream else {})})
    cmd = [sys.executable, "-m", "pyrovae.cli", "fit", "--data", "arr.npy", "--out", str(out), *FLAGS, *extra]
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(folder, out, *extra, stream=True):
    process = _start(folder, out, *extra, stream=stream)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return _trained(load_checkpoint(folder / out / "checkpoint.pt"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streamed")
    (folder / "slowobj.py").write_text(SLOW)
    rows = np.random.default_rng(0).random((400, 12)) < 0.3  # 320 train rows: 32 steps an epoch
    np.save(folder / "arr.npy", rows.astype(np.float32))
    return folder


def test_kill_9_mid_epoch_of_a_streamed_fit_then_resume_equals_the_uninterrupted_run(folder):
    straight = _run(folder, "straight")
    run_json = (folder / "straight" / "run.json").read_text()
    assert "data streamed: 320 rows" in run_json and '"kind": "array"' in run_json

    killed = folder / "killed"
    process = _start(folder, "killed", slow=0.03)
    deadline = time.monotonic() + 60
    while not (killed / "checkpoint.pt").exists():  # epoch 1 done
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.005)
    time.sleep(0.3)  # inside epoch 2 (32 steps of 30 ms or more)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 1, "the kill came after epoch 2 ended"

    resumed = subprocess.run([sys.executable, "-m", "pyrovae.cli", "fit", "--out", "killed", "--resume",
                              "--no-progress"], cwd=folder, env=environ({"PYROVAE_MAX_BYTES": "0"}),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(straight, _trained(load_checkpoint(killed / "checkpoint.pt")))


@pytest.mark.slow  # tests/data/test_fit_streamed.py checks the same in one process
def test_the_streamed_run_equals_the_run_held_on_the_device(folder):
    if not (folder / "straight" / "checkpoint.pt").exists():
        _run(folder, "straight")
    held = _run(folder, "held", stream=False)
    assert "data on-device: 320 rows" in (folder / "held" / "run.json").read_text()
    _assert_same(_trained(load_checkpoint(folder / "straight" / "checkpoint.pt")), held)
