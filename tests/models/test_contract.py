"""Every registered model, paired with its guide, meets the model/guide contract, and draws
fresh data."""

import pytest
import torch

from pyrovae.registry import get_model, list_models
from tests.contract import X_DIM, build_pair, check_pair


@pytest.mark.parametrize("model_name", list_models())
def test_model_contract(model_name, tmp_path):
    check_pair(model_name, getattr(get_model(model_name), "guide_name", "diag"), tmp_path)


@pytest.mark.parametrize("model_name", list_models())
def test_model_draws_fresh_data(model_name):
    model, _ = build_pair(model_name, getattr(get_model(model_name), "guide_name", "diag"))
    x = model(num_samples=7)
    assert x.shape == (7, X_DIM) and torch.isfinite(x).all()
