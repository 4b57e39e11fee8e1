"""Every registered guide, paired with its model, meets the model/guide contract."""

import pytest

from pyrovae.guides.base import model_name_of
from pyrovae.registry import get_guide, list_guides
from tests.contract import check_pair


@pytest.mark.filterwarnings("error:the training step:RuntimeWarning")  # as the model contract's
@pytest.mark.parametrize("guide_name", list_guides())
def test_guide_contract(guide_name, tmp_path):
    check_pair(model_name_of(get_guide(guide_name)), guide_name, tmp_path)
