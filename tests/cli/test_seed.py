"""The same --seed gives the same run: two fresh processes, checkpoints equal tensor for tensor."""

import pytest
import torch

from tests.cli.helpers import pyrovae


def _tensors(value, prefix=""):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}/{i}")


def test_two_fits_with_one_seed_give_equal_checkpoints(tmp_path):
    for out in ("A", "B"):
        result = pyrovae("fit", "--epochs", "2", "--seed", "0", "--z-dim", "2", "--hidden-dims", "16",
                         "--eval-samples", "0", "--no-progress", "--out", out, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    a, b = (dict(_tensors(torch.load(tmp_path / out / "checkpoint.pt", weights_only=True))) for out in "AB")
    assert a.keys() == b.keys() and any("weight" in key for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.cuda
def test_a_fresh_process_on_cuda_trains_in_a_cuda_graph(tmp_path):
    # torch's one-off notice when the sync debug mode is first switched on was once taken for a
    # host sync, so the first fit of every process ran eagerly (an H200 run caught it)
    result = pyrovae("fit", "--epochs", "1", "--device", "cuda", "--no-progress", "--out", tmp_path / "r",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "runs eagerly" not in result.stderr and "capture" not in result.stderr, result.stderr
