"""The discretized logistic mixture (PixelCNN++): its probabilities over all grey levels sum
to one, equal a direct computation from the logistic CDF (edge bins included), and its
draws, mean, shapes and support agree with them."""

import pytest
import torch

from pyrovae.distributions.discretized_logistic import DiscretizedLogisticMixture


def params(batch=(4, 3), k=5, seed=0, scale_shift=-2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, k)
    return (torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype) * 0.7,
            torch.randn(shape, generator=g, dtype=dtype) + scale_shift)


def direct_probs(logits, locs, log_scales, num_bins):
    """P(x) for every x by the CDF: tails into the edge bins, plain float64 arithmetic."""
    cdf = lambda y: torch.sigmoid((y - locs) / log_scales.clamp(min=-7).exp())  # noqa: E731
    w = torch.softmax(logits, -1)
    edges = torch.linspace(-1, 1, num_bins, dtype=torch.float64)  # bin centres
    half = 1.0 / (num_bins - 1)
    out = []
    for b, c in enumerate(edges):
        upper = torch.ones_like(locs) if b == num_bins - 1 else cdf(c + half)
        lower = torch.zeros_like(locs) if b == 0 else cdf(c - half)
        out.append(((upper - lower) * w).sum(-1))
    return torch.stack(out)  # (num_bins, *batch)


@pytest.mark.parametrize("shift", [-6.0, -2.0, 1.0])
@pytest.mark.parametrize("num_bins", [256, 17])
def test_probabilities_sum_to_one_and_match_the_cdf(shift, num_bins):
    logits, locs, log_scales = params(scale_shift=shift)
    d = DiscretizedLogisticMixture(logits, locs, log_scales, num_bins=num_bins)
    values = torch.arange(num_bins, dtype=torch.float64).reshape(-1, 1, 1)
    probs = d.log_prob(values).exp()  # (num_bins, 4, 3)
    assert torch.allclose(probs.sum(0), torch.ones(4, 3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(probs, direct_probs(logits, locs, log_scales, num_bins), atol=1e-12, rtol=1e-9)


def test_edge_bins_take_the_tails():
    """A component far above the top edge puts its mass in bin 255, far below in bin 0."""
    d = DiscretizedLogisticMixture(torch.zeros(2, 1), torch.tensor([[5.0], [-5.0]]), torch.full((2, 1), -3.0))
    assert d.log_prob(torch.tensor([255.0, 0.0])).exp().tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert (d.log_prob(torch.tensor([254.0, 1.0])).exp() < 1e-6).all()


def test_tiny_scales_are_finite_and_exact_in_float32():
    """Sharp components (log-scale at the -7 floor) keep finite log-probabilities and a
    gradient, far from their centre too; the centre bin holds nearly all the mass."""
    locs = torch.tensor([[0.0]], requires_grad=True)
    d = DiscretizedLogisticMixture(torch.zeros(1, 1), locs, torch.full((1, 1), -9.0))
    lp = d.log_prob(torch.arange(256.0).unsqueeze(-1))
    assert torch.isfinite(lp).all()
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    lp[200].sum().backward()
    assert torch.isfinite(locs.grad).all() and locs.grad.abs().item() > 0


def test_shapes_support_and_expand():
    d = DiscretizedLogisticMixture(*params(batch=(3, 7), dtype=torch.float32))
    assert d.batch_shape == (3, 7) and d.event_shape == ()
    assert d.support.check(torch.tensor([0.0, 255.0])).all() and not d.support.check(torch.tensor(256.0))
    assert not d.support.check(torch.tensor(2.5))
    assert d.to_event(1).log_prob(torch.zeros(3, 7)).shape == (3,)
    e = d.expand((2, 3, 7))
    assert e.batch_shape == (2, 3, 7) and e.log_prob(torch.zeros(2, 3, 7)).shape == (2, 3, 7)
    assert d.sample((5,)).shape == (5, 3, 7)
    with pytest.raises(ValueError, match="num_bins"):
        DiscretizedLogisticMixture(*params(), num_bins=1)


def test_draws_and_mean_follow_the_probabilities():
    torch.manual_seed(0)
    logits, locs, log_scales = params(batch=(1,), k=3, seed=2, scale_shift=-0.5, dtype=torch.float32)
    d = DiscretizedLogisticMixture(logits, locs, log_scales, num_bins=8)
    probs = d.log_prob(torch.arange(8.0).unsqueeze(-1)).exp().squeeze(-1)
    draws = d.sample((40000,)).squeeze(-1)
    assert ((draws >= 0) & (draws <= 7) & (draws == draws.round())).all()
    freq = torch.bincount(draws.long(), minlength=8).float() / len(draws)
    se = (probs * (1 - probs) / len(draws)).sqrt()
    assert ((freq - probs).abs() < 5 * se + 1e-4).all(), (freq, probs)
    assert d.mean.item() == pytest.approx((probs * torch.arange(8.0)).sum().item(), rel=1e-5)
