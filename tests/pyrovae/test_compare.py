"""paired_difference: the mean and standard error of per-datapoint differences, checked by
hand and against the unpaired spread it removes; its refusals; the data fingerprint."""

import math

import numpy as np
import pytest
import torch

from pyrovae import paired_difference
from pyrovae.evaluation.compare import data_fingerprint
from pyrovae.evaluation.log_likelihood import LogLikelihood


def test_the_paired_difference_by_hand():
    a = np.array([-80.0, -95.0, -101.0, -88.0])
    b = np.array([-79.0, -95.5, -99.0, -88.0])
    d = b - a  # 1, -0.5, 2, 0
    result = paired_difference(b, a)
    assert result.mean == pytest.approx(0.625)
    assert result.stderr == pytest.approx(math.sqrt(np.sum((d - 0.625) ** 2) / 3) / 2)
    assert result.fraction_higher == 0.5 and result.n == 4
    assert str(result) == "+0.62 ± 0.55 nats (higher on 50.0% of 4 datapoints)"


def test_pairing_removes_the_spread_between_datapoints():
    g = torch.Generator().manual_seed(0)
    hardness = -90 + 20 * torch.randn(2000, generator=g)  # most spread is between images
    a = hardness + 0.1 * torch.randn(2000, generator=g)
    b = hardness + 0.3 + 0.1 * torch.randn(2000, generator=g)
    result = paired_difference(b, a)
    assert result.mean == pytest.approx(0.3, abs=0.02)
    unpaired = math.sqrt(float(a.var() + b.var()) / 2000)
    assert result.stderr < unpaired / 50  # the unpaired standard error would hide a 0.3-nat effect
    assert result.stderr == pytest.approx(math.sqrt(0.02 / 2000), rel=0.1)


def test_an_estimate_object_is_read_by_its_per_datapoint_values():
    per = torch.tensor([-1.0, -2.0, -4.0])
    est = LogLikelihood(float(per.mean()), 0.0, per, torch.ones(3), 10, -5.0)
    assert paired_difference(est, per - 1).mean == pytest.approx(1.0)


@pytest.mark.parametrize("b, a, match", [
    ([1.0, 2.0, 3.0], [1.0, 2.0], r"different numbers of datapoints \(3 and 2\)"),
    ([1.0], [2.0], "at least two datapoints"),
    ([1.0, float("nan")], [1.0, 2.0], "1 of its 2 values are not finite"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "one value per datapoint"),
])
def test_refusals(b, a, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(b, a)


def test_the_fingerprint_changes_with_any_value_and_ignores_the_key_order():
    x = torch.bernoulli(torch.full((5, 4), 0.5), generator=torch.Generator().manual_seed(1))
    y = torch.arange(5)
    base = data_fingerprint({"x": x, "y": y})
    assert base == data_fingerprint({"y": y.clone(), "x": x.clone()})
    flipped = x.clone()
    flipped[2, 3] = 1 - flipped[2, 3]
    assert data_fingerprint({"x": flipped, "y": y}) != base
    assert data_fingerprint({"x": x[:4], "y": y[:4]}) != base
    assert data_fingerprint(torch.utils.data.TensorDataset(x)) is None
