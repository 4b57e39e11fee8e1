"""Training-length checks (``pytest -m slow``, minutes on one CPU core): the README's main job
reaches the test log-likelihood documented in docs/vae.md, and the directions of the MNIST
guide table of docs/guides.md hold (planar beats the diagonal guide, full covariance loses
to it), each as a paired difference on the same test images."""

import importlib.util
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_main_job_reaches_the_documented_log_likelihood(tmp_path):
    """docs/vae.md: the default `pyrovae fit` gives -22.91 ± 0.21 nats (IWAE K=5000, 300 test digits)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fit = subprocess.run([sys.executable, "-m", "pyrovae.cli", "fit", "--no-progress", "--eval-samples", "0",
                          "--out", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert fit.returncode == 0, fit.stderr
    evaluate = subprocess.run([sys.executable, "-m", "pyrovae.cli", "evaluate", "run", "--num-samples", "5000",
                               "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert evaluate.returncode == 0, evaluate.stderr
    result = json.loads(evaluate.stdout)
    assert result["num_datapoints"] == 300
    assert -24.5 < result["log_likelihood"] < -21.5, result
    assert result["log_likelihood"] > result["elbo"] + 0.2, result  # the bound is loose by about 0.5 nats


def _guides_benchmark():
    bench = str(ROOT / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)  # the script imports its helpers (_harness)
    spec = importlib.util.spec_from_file_location("guides_mnist", ROOT / "benchmarks" / "guides_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_directions_of_the_mnist_guide_table():
    """docs/guides.md, 10 epochs on MNIST, on the first 500 test images, each at more than 3
    paired standard errors: from the default initialisation (burda), fullcov (relative, the
    default) beats diag (+0.31 ± 0.08 on 2,000 images there; +0.65 ± 0.15 here, 2026-12-07);
    from torch's layers, planar-8 beats diag (+1.64 ± 0.22 here; from burda's start planar-8
    gains nothing, -0.02 ± 0.15)."""
    from pyrovae.data.datasets import DataNotFoundError, load_dataset

    try:
        dataset = load_dataset("mnist", data_dir=os.environ.get("PYROVAE_DATA"))
    except DataNotFoundError:
        pytest.skip("MNIST not found (set PYROVAE_DATA)")
    bench = _guides_benchmark()
    test = {k: v[:500] for k, v in dataset.test.items()}
    for init, label in ((None, "fullcov"), ("torch", "planar-8")):  # None: the model's default, as the script
        args = Namespace(seed=0, epochs=10, batch_size=100, lr=1e-3, z_dim=50, hidden_dims=[200, 200],
                         num_samples=1000, valid_size=100, init=init)
        rows = {name: bench.run_one(name, dataset, test, args) for name in ("diag", label)}
        d = rows[label]["per_datapoint"] - rows["diag"]["per_datapoint"]
        mean, se = float(d.mean()), float(d.std() / len(d) ** 0.5)
        assert mean > 3 * se, (init, label, mean, se)
