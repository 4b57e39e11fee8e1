"""benchmarks/pythae_reference.py runs in pythae's own environment, outside this repository's
dependencies: here only its command line is checked (parsing happens before pythae is imported)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pythae_reference.py"


def test_help_runs_without_pythae_and_names_the_setup_and_the_models():
    p = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "pip install pythae==0.1.2" in p.stdout
    for model in ("vae", "iwae", "iaf", "infovae", "svae"):
        assert model in p.stdout


def test_an_unknown_model_is_refused_before_pythae_is_needed():
    p = subprocess.run([sys.executable, str(SCRIPT), "--model", "vamp"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "invalid choice: 'vamp'" in p.stderr


def test_the_mse_data_are_the_least_squares_benchmarks_draws(monkeypatch):
    import importlib.util
    import os

    import pytest
    import torch

    data = Path(os.environ.get("PYROVAE_DATA", "/work/shared/data"))
    if not (data / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST IDX files; set PYROVAE_DATA")
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # least_squares.py imports _harness
    modules = {}
    for name in ("pythae_reference", "least_squares"):
        spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    train, valid, test = modules["pythae_reference"].load_mnist_grey(str(data / "mnist"), 300, 40, seed=3)
    from pyrovae.data import load_dataset

    grey = load_dataset("mnist", data_dir=str(data), binarize="none")
    dequantize = modules["least_squares"].dequantize
    assert torch.equal(train, dequantize(grey.train["x"][:300], 3))
    assert torch.equal(test, dequantize(grey.test["x"][:40], 103))
    assert valid.shape == (10000, 784) and bool(((valid >= 0) & (valid <= 1)).all())
