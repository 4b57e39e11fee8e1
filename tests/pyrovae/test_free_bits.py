"""Free bits: lambda = 0 is the ELBO; the clamp max(lambda, KL_group) is active exactly for the
groups whose closed-form KL is below lambda, in the loss value and in its gradient."""

import pyro
import pytest
import torch
from pyro.nn import PyroModule

from pyrovae import fit
from pyrovae.guides import DiagNormalGuide, FullCovNormalGuide
from pyrovae.models import VAE
from pyrovae.infer.objectives import ELBO, FreeBitsELBO, MeanFieldELBO, objective_record
from pyrovae.registry import get_objective

X = torch.bernoulli(torch.full((8, 12), 0.3), generator=torch.Generator().manual_seed(0))


class FixedGuide(PyroModule):
    """q(z_n) = N(loc, diag scale^2) for every datapoint: its KL to N(0, I) per dimension is
    0.5 (loc^2 + scale^2 - 1) - log scale, the same for every n."""

    def __init__(self, loc, scale):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.as_tensor(loc))
        self.log_scale = torch.nn.Parameter(torch.as_tensor(scale).log())

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = self.loc.expand(x.shape[0], -1)
            return pyro.sample("z", pyro.distributions.Normal(loc, self.log_scale.exp()).to_event(1))


def closed_form_kl(loc, scale):
    loc, scale = torch.as_tensor(loc), torch.as_tensor(scale)
    return 0.5 * (loc ** 2 + scale ** 2 - 1) - scale.log()


def loss_and_grad(objective, model, guide, seed=1, step=None):
    pyro.set_rng_seed(seed)
    guide.zero_grad()
    loss = objective(model, guide, {"x": X}, step)
    loss.backward()
    return loss.detach(), guide.loc.grad.clone()


def test_registered_with_its_options():
    objective = get_objective("free-bits")(free_bits=0.25, free_bits_groups=2, beta=0.5)
    assert objective_record(objective) == {"name": "free-bits", "beta": 0.5, "warmup_steps": 0,
                                  "free_bits": 0.25, "free_bits_groups": 2}


@pytest.mark.parametrize("groups", [0, 2, 4])
def test_zero_lambda_is_the_meanfield_elbo(groups):
    torch.manual_seed(0)
    model, guide = VAE(12, 4, (16,)), DiagNormalGuide(12, 4, (16,))
    for step in (None, 3):  # with a KL warm-up too
        pyro.set_rng_seed(1)
        expected = MeanFieldELBO(warmup_steps=10)(model, guide, {"x": X}, step)
        pyro.set_rng_seed(1)
        actual = FreeBitsELBO(free_bits=0.0, free_bits_groups=groups, warmup_steps=10)(model, guide, {"x": X}, step)
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_zero_lambda_with_a_sampled_kl_is_trace_elbo():
    """No analytic KL for a full-covariance guide against a diagonal prior: the one-sample
    estimate log q - log p makes it exactly Pyro's Trace_ELBO at the same draw."""
    torch.manual_seed(0)
    model, guide = VAE(12, 4, (16,)), FullCovNormalGuide(12, 4, (16,))
    pyro.set_rng_seed(1)
    expected = ELBO()(model, guide, {"x": X})
    pyro.set_rng_seed(1)
    actual = FreeBitsELBO(free_bits=0.0)(model, guide, {"x": X})
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="does not factorize"):
        FreeBitsELBO(free_bits=0.1, free_bits_groups=2)(model, guide, {"x": X})


LOC = [0.1, 1.5, 0.0, 1.0]
SCALE = [0.9, 0.5, 1.0, 0.6]


@pytest.mark.parametrize("groups, lam", [(0, 3.0), (0, 2.0), (4, 0.5), (2, 1.0), (2, 0.01)])
def test_clamp_is_active_exactly_where_the_closed_form_says(groups, lam):
    torch.manual_seed(0)
    model, guide = VAE(12, 4, (16,)), FixedGuide(LOC, SCALE)
    kl_dims = closed_form_kl(LOC, SCALE)  # (4,)
    blocks = torch.tensor_split(kl_dims, groups) if groups else [kl_dims]
    kl_groups = torch.stack([b.sum() for b in blocks])
    active = kl_groups < lam
    beta = 0.7
    loss_fb, grad_fb = loss_and_grad(FreeBitsELBO(free_bits=lam, free_bits_groups=groups, beta=beta), model, guide)
    loss_mf, grad_mf = loss_and_grad(MeanFieldELBO(beta=beta), model, guide)
    # the same draw: the reconstruction terms agree, only the clamped KL differs
    expected_gap = beta * (lam - kl_groups).clamp(min=0).sum()
    torch.testing.assert_close(loss_fb - loss_mf, expected_gap, rtol=1e-6, atol=1e-6)
    # d KL_i / d loc_i = loc_i: the clamped groups lose exactly that part of the gradient
    dims_active = torch.cat([a.expand(len(b)) for a, b in zip(active, blocks)])
    torch.testing.assert_close(grad_fb, grad_mf - beta * dims_active * torch.tensor(LOC), rtol=1e-6, atol=1e-6)


def test_cases_above_cover_both_sides():
    """The closed-form group KLs of the fixed guide straddle the lambdas used above."""
    kl = closed_form_kl(LOC, SCALE)
    assert kl.sum() > 2.0 and kl.sum() < 3.0
    assert (kl < 0.5).any() and (kl > 0.5).any()
    halves = torch.stack([b.sum() for b in torch.tensor_split(kl, 2)])
    assert (halves < 1.0).any() and (halves > 1.0).any()


class PerDatapointGuide(PyroModule):
    """q(z_n) = N(loc_n, diag scale^2) with a mean of its own per datapoint: KL_n to N(0, I) per
    dimension is 0.5 (loc_n^2 + scale^2 - 1) - log scale, different for every n."""

    def __init__(self, loc, scale):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.as_tensor(loc))  # (N, Z)
        self.log_scale = torch.nn.Parameter(torch.as_tensor(scale).log())  # (Z,)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", pyro.distributions.Normal(self.loc, self.log_scale.exp()).to_event(1))


PER_POINT_LOC = torch.linspace(0.0, 2.0, 8)[:, None] * torch.tensor([1.0, 0.5, 1.5, 0.8])  # (N, Z)


@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("fraction", [0.6, 1.2])
def test_the_clamp_is_on_the_batch_mean_kl_not_on_each_datapoints(groups, fraction):
    """Kingma et al.'s free bits clamp each group's KL *averaged over the batch*:
    loss = -(1/N) sum_n log p(x_n | z_n) + beta sum_g max(lambda, (1/N) sum_n KL_{n,g}).
    With per-datapoint KLs on both sides of lambda (checked here), clamping each datapoint's
    KL instead gives another value and gradient: lambda below the batch means (0.6 x the
    smallest) leaves the clamp off, above them (1.2 x the largest) turns it on for whole groups. Against the meanfield
    ELBO at the same draw (the same reconstruction term); tolerances 1e-6."""
    torch.manual_seed(0)
    model, guide = VAE(12, 4, (16,)), PerDatapointGuide(PER_POINT_LOC.clone(), [0.8, 0.6, 1.0, 0.9])
    n = PER_POINT_LOC.shape[0]
    kl_dims = closed_form_kl(PER_POINT_LOC, torch.tensor([0.8, 0.6, 1.0, 0.9]))  # (N, Z)
    blocks = torch.tensor_split(kl_dims, groups, dim=-1) if groups else [kl_dims]
    kl_points = torch.stack([b.sum(-1) for b in blocks], -1)  # (N, G): each datapoint's KL per group
    kl_groups = kl_points.mean(0)  # (G,): averaged over the batch
    lam = fraction * float(kl_groups.min() if fraction < 1 else kl_groups.max())  # below every group's mean, or above
    for g in range(len(blocks)):  # the datapoints straddle lambda in every group
        assert (kl_points[:, g] < lam).any() and (kl_points[:, g] > lam).any()
    clamped = kl_groups < lam  # (G,): the clamp is on for these whole groups
    assert clamped.all() if fraction > 1 else not clamped.any()
    beta = 0.7
    loss_fb, grad_fb = loss_and_grad(FreeBitsELBO(free_bits=lam, free_bits_groups=groups, beta=beta), model, guide)
    loss_mf, grad_mf = loss_and_grad(MeanFieldELBO(beta=beta), model, guide)
    expected_gap = beta * (kl_groups.clamp(min=lam) - kl_groups).sum()
    torch.testing.assert_close(loss_fb - loss_mf, expected_gap, rtol=1e-6, atol=1e-6)
    per_datapoint_gap = beta * (kl_points.clamp(min=lam).mean(0) - kl_groups).sum()
    assert abs(float(per_datapoint_gap - expected_gap)) > 0.05  # the other reading differs by far more than 1e-6
    # d KL_{n,g} / d loc_{n,d} = loc_{n,d}, averaged over the batch: a clamped group loses it for every n
    dims_clamped = torch.cat([c.expand(b.shape[-1]) for c, b in zip(clamped, blocks)])  # (Z,)
    torch.testing.assert_close(grad_fb, grad_mf - beta * dims_clamped * PER_POINT_LOC / n, rtol=1e-6, atol=1e-6)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="free_bits"):
        FreeBitsELBO(free_bits=-1.0)
    with pytest.raises(ValueError, match="free_bits_groups"):
        FreeBitsELBO(free_bits_groups=-2)
    model, guide = VAE(12, 2, (16,)), DiagNormalGuide(12, 2, (16,))
    with pytest.raises(ValueError, match="fewer than"):
        FreeBitsELBO(free_bits=0.1, free_bits_groups=3)(model, guide, {"x": X})


def test_trains_with_fit():
    torch.manual_seed(0)
    model, guide = VAE(12, 4, (16,)), DiagNormalGuide(12, 4, (16,))
    result = fit(model, guide, X.repeat(4, 1), objective=FreeBitsELBO(free_bits=0.5, free_bits_groups=2),
                 epochs=2, batch_size=16, progress=False)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.metrics)
