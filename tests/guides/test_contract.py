"""Every registered guide, paired with its model, meets the model/guide contract."""

import pytest

from pyrovae.registry import get_guide, list_guides
from tests.contract import check_pair


@pytest.mark.parametrize("guide_name", list_guides())
def test_guide_contract(guide_name, tmp_path):
    check_pair(getattr(get_guide(guide_name), "model_name", "vae"), guide_name, tmp_path)
