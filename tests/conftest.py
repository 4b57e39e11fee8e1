"""Shared fixtures. The data path comes from PYROVAE_DATA, else ../shared/data beside the repo
(as CI lays it out); the package itself never hard-codes it."""

import os
from pathlib import Path

import pyro
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# The tests run many tiny tensor operations; on a small, shared machine a second intra-op
# thread only adds synchronisation stalls.
torch.set_num_threads(1)


def _shared_data():
    env = os.environ.get("PYROVAE_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


@pytest.fixture
def data_dir():
    """A folder holding mnist/, binarized_mnist/ ...; skips the test where there is none."""
    path = _shared_data()
    if not (path / "mnist").is_dir():
        pytest.skip(f"no MNIST files under {path}; set PYROVAE_DATA")
    return path


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Each test starts with an empty param store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


cuda_available = torch.cuda.is_available()
