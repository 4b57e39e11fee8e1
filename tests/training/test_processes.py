"""fit in fresh processes: the same seed gives the same run, kill -9 then resume gives the
uninterrupted run bit for bit, and a plain-function pair reloads in another process."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyrovae.training.checkpoint import load_checkpoint

PAIR = """
import sys, time, pyro, torch, pyrovae
from pyrovae.models import VAE
from pyrovae.guides import DiagNormalGuide
from pyrovae.infer.objectives import ELBO

class Slow(ELBO):  # as a long step would be: room to kill the process mid-epoch
    def __call__(self, model, guide, batch, step=None):
        time.sleep(float(sys.argv[3]))
        return super().__call__(model, guide, batch, step)

pyro.set_rng_seed(0)
model, guide = VAE(64, 4, (32,)), DiagNormalGuide(64, 4, (32,))
pyrovae.fit(model, guide, "digits", objective=Slow(), epochs=2, batch_size=int(sys.argv[2]), seed=5,
            out_dir=sys.argv[1], resume=len(sys.argv) > 4, progress=False, figures=False)
"""


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _fit(out, *args, check=True):
    cmd = [sys.executable, "-c", PAIR, str(out), *map(str, args)]
    if not check:
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def _assert_same(a, b, where="checkpoint"):
    """Equal tensor for tensor, through dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _trained(state: dict) -> dict:
    """What must agree between runs (timings excluded)."""
    keep = {k: state[k] for k in ("model", "guide", "optimizer", "rng", "epoch", "step")}
    keep["losses"] = [(m["train_loss"], m["valid_elbo"]) for m in state["metrics"]]
    return keep


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run (seed 5, batch 10: about 145 steps an epoch, 2 epochs)."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    _fit(out, 10, 0)
    return _trained(load_checkpoint(out / "checkpoint.pt"))


def test_same_seed_gives_the_same_run_in_two_processes(tmp_path, straight):
    _fit(tmp_path / "again", 10, 0)
    _assert_same(straight, _trained(load_checkpoint(tmp_path / "again" / "checkpoint.pt")))


def test_kill_9_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, straight):
    killed = tmp_path / "killed"
    process = _fit(killed, 10, 0.004, check=False)
    deadline = time.monotonic() + 60
    while not (killed / "checkpoint.pt").exists():  # epoch 1 done
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.005)
    time.sleep(0.25)  # well inside epoch 2 (about 145 steps of 4 ms or more)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 1, "the kill came after epoch 2 ended"
    assert (killed / ".lock").exists()  # left by the killed process: it must not block the resume

    _fit(killed, 10, 0, "resume")
    _assert_same(straight, _trained(load_checkpoint(killed / "checkpoint.pt")))
    assert load_checkpoint(killed / "checkpoint.prev.pt")["epoch"] == 1


# a checkpoint at every loss check within an epoch (every 50 steps): the interval's floor and
# checkpoint_seconds set to 0 for the test (60 s and 10 s by default)
MID_PAIR = PAIR.replace("import sys, time, pyro, torch, pyrovae",
                        "import sys, time, pyro, torch, pyrovae, importlib\n"
                        "importlib.import_module('pyrovae.training.fit').MID_EPOCH_SECONDS = 0.0"
                        ).replace("progress=False, figures=False)", "progress=False, figures=False, checkpoint_seconds=0)")


def test_kill_9_after_a_checkpoint_within_the_first_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, straight):
    """A long epoch is saved within (at a loss check, at most every minute by default): killed
    after such a checkpoint in epoch 1, the resume starts at its next batch and ends with the
    uninterrupted run's weights, optimizer, random state and metrics (epoch 1's loss included)."""
    killed = tmp_path / "mid"
    assert MID_PAIR != PAIR and "checkpoint_seconds=0" in MID_PAIR
    process = subprocess.Popen([sys.executable, "-c", MID_PAIR, str(killed), "10", "0.02"], env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (killed / "checkpoint.pt").exists():  # the first checkpoint: step 50 of epoch 1's 145
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = load_checkpoint(killed / "checkpoint.pt")
    assert state["epoch"] == 0 and state["position"]["epoch"] == 0 and state["position"]["batch"] in (50, 100)
    assert state["metrics"] == [] and state["step"] == state["position"]["batch"]
    assert not (killed / "metrics.jsonl").exists()  # metrics are written at epoch ends
    from pyrovae.cli.fit import interrupted_message

    assert f"(within epoch 1, after {state['step']} steps). Resume with: " in interrupted_message(killed)

    _fit(killed, 10, 0, "resume")
    _assert_same(straight, _trained(load_checkpoint(killed / "checkpoint.pt")))


README_PAIR = """
import sys, pyro, pyro.distributions as dist, torch, pyrovae

torch.manual_seed(int(sys.argv[2]))  # the reloading process starts from other weights
decoder = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64))
encoder = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))

def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

def guide(x):
    pyro.module("encoder", encoder)
    shift = pyro.param("shift", torch.full((2,), 0.5), constraint=dist.constraints.interval(-1.0, 1.0))
    loc, log_scale = encoder(x).chunk(2, -1)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc + shift, log_scale.exp()).to_event(1))

if sys.argv[3] == "fit":
    pyrovae.fit(model, guide, "digits", objective="iwae", epochs=2, out_dir=sys.argv[1], progress=False,
                figures=False)
else:
    pyrovae.load_run(sys.argv[1], model=model, guide=guide)
pyro.set_rng_seed(1)
print(repr(pyrovae.log_likelihood(model, guide, "digits", num_samples=20).log_likelihood))
"""


def test_a_plain_function_pair_reloads_in_another_process(tmp_path):
    def run(*args):
        done = subprocess.run([sys.executable, "-c", README_PAIR, str(tmp_path / "mine"), *args], env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return float(done.stdout.split()[-1])

    fitted = run("0", "fit")
    reloaded = run("1", "load")
    assert reloaded == fitted
