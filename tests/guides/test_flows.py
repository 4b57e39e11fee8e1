"""Flow guides (iaf, planar, radial, spline): each step's log|det J| against autograd, the
inverse round trip, log q(z|x) of the guide's own draws against the change of variables
computed independently, under the particle plate, and a few training steps."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch.autograd.functional import jacobian

from pyrovae import fit
from pyrovae.evaluation.log_likelihood import log_likelihood
from pyrovae.guides import IAFGuide
from pyrovae.models import VAE
from pyrovae.infer.objectives import IWAE
from pyrovae.registry import build, get_guide

FLOWS = ["iaf", "iaf-affine", "planar", "radial", "spline"]
INVERTIBLE = ["iaf", "iaf-affine", "spline"]
VARIANTS = {"iaf-affine": ("iaf", {"step": "affine"})}  # a registered guide with other options
X_DIM, Z_DIM = 6, 3


def make_guide(name, seed=0, **options):
    """A float64 guide whose parameters are all redrawn at a scale that makes every step far
    from the identity (a weak test otherwise)."""
    torch.manual_seed(seed)
    name, variant = VARIANTS.get(name, (name, {}))
    guide = build(get_guide(name), {"z_dim": Z_DIM, "hidden_dims": (8,), **variant, **options}, fill={"x_dim": X_DIM})
    guide = guide.double()
    with torch.no_grad():
        for p in guide.parameters():
            p.normal_(0.0, 0.6)
    return guide


def data(n=4, seed=1):
    return torch.bernoulli(torch.full((n, X_DIM), 0.4, dtype=torch.float64),
                           generator=torch.Generator().manual_seed(seed))


def compose(steps, z):
    for step in steps:
        z = step(z)
    return z


@pytest.mark.parametrize("name", FLOWS)
def test_each_step_log_det_matches_autograd(name):
    guide = make_guide(name)
    _, h = guide.encode_base(data())
    torch.manual_seed(2)
    for n in range(h.shape[0]):
        steps = guide.transforms(h[n])  # conditioned on one datapoint's context
        for step in steps:
            for _ in range(3):
                z = 1.5 * torch.randn(Z_DIM, dtype=torch.float64)
                expected = torch.linalg.slogdet(jacobian(lambda v: step(v), z))[1]
                actual = step.log_abs_det_jacobian(z, step(z))
                torch.testing.assert_close(actual.reshape(()), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["iaf", "iaf-affine", "spline"])
def test_autoregressive_steps_are_triangular_and_order_reversed(name):
    guide = make_guide(name)
    _, h = guide.encode_base(data(1))
    steps = guide.transforms(h[0])
    assert len(steps) == 2 * guide.num_flows - 1
    z = torch.randn(Z_DIM, dtype=torch.float64)
    for t, step in enumerate(steps):
        J = jacobian(lambda v: step(v), z)
        if t % 2 == 0:  # a flow step: output i depends on inputs <= i only
            assert torch.count_nonzero(torch.triu(J, 1)) == 0
            assert torch.count_nonzero(torch.tril(J, -1)) > 0
        else:  # the reversal between steps
            torch.testing.assert_close(J, torch.eye(Z_DIM, dtype=torch.float64).flip(0))


def test_iaf_step_is_the_gated_update_of_the_paper():
    guide = make_guide("iaf", sigmoid_bias=1.5)
    _, h = guide.encode_base(data())
    z = torch.randn(4, Z_DIM, dtype=torch.float64)
    made = guide.flows[0].nn
    m, s = made(z, context=h)
    gate = torch.sigmoid(s + 1.5)
    step = guide.transforms(h)[0]
    y = step(z)
    torch.testing.assert_close(y, gate * z + (1 - gate) * m, rtol=0, atol=1e-12)
    torch.testing.assert_close(step.log_abs_det_jacobian(z, y), torch.log(gate).sum(-1), rtol=0, atol=1e-12)


def test_iaf_affine_step_is_shift_and_clipped_exp_scale():
    guide = make_guide("iaf", step="affine")
    _, h = guide.encode_base(data())
    z = torch.randn(4, Z_DIM, dtype=torch.float64)
    made = guide.flows[0].nn
    m, s = made(z, context=h)
    assert s.abs().max() > 1.0  # far from the identity (make_guide's scale)
    log_scale = s.clamp(-5.0, 3.0)
    step = guide.transforms(h)[0]
    y = step(z)
    torch.testing.assert_close(y, m + log_scale.exp() * z, rtol=0, atol=1e-12)
    torch.testing.assert_close(step.log_abs_det_jacobian(z, y), log_scale.sum(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_round_trip(name):
    guide = make_guide(name)
    _, h = guide.encode_base(data())
    z = 1.5 * torch.randn(2, 4, Z_DIM, dtype=torch.float64)
    for step in guide.transforms(h):
        y = step(z)
        # a copy of y is not the cached tensor, so the inverse is computed afresh
        torch.testing.assert_close(step.inv(y.clone()), z, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("num_particles", [1, 3])
def test_log_q_of_own_draws_is_the_change_of_variables(name, num_particles):
    """Trace the guide under the particle plate (z: (K, N, z_dim), h: (N, H)); then redraw the
    same base noise, push it through freshly conditioned steps, and compare log q with
    log N(z0) - log|det dz/dz0| from autograd, point by point."""
    guide, x = make_guide(name), data()
    pyro.set_rng_seed(3)
    with pyro.plate("_num_particles", num_particles, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    trace.compute_log_prob()
    z_t, log_q = trace.nodes["z"]["value"], trace.nodes["z"]["log_prob"]
    assert z_t.shape == (num_particles, 4, Z_DIM) and log_q.shape == (num_particles, 4)

    pyro.set_rng_seed(3)
    base, h = guide.encode_base(x)
    z0 = base.expand([num_particles, 4]).rsample()
    steps = guide.transforms(h)
    torch.testing.assert_close(compose(steps, z0), z_t, rtol=0, atol=1e-12)
    for k in range(num_particles):
        for n in range(4):
            def point(v, k=k, n=n):
                z = z0.clone()
                z[k, n] = v
                return compose(steps, z)[k, n]

            log_det = torch.linalg.slogdet(jacobian(point, z0[k, n]))[1]
            expected = base.base_dist.log_prob(z0[k, n]).sum(-1)[n] - log_det
            torch.testing.assert_close(log_q[k, n], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_replayed_values_are_scored_through_the_inverse(name):
    guide, x = make_guide(name), data()
    q = guide.encode(x)
    z = q.rsample([2])
    torch.testing.assert_close(q.log_prob(z.clone()), q.log_prob(z), rtol=0, atol=1e-8)
    torch.testing.assert_close(guide.encode(x).log_prob(z.clone()), q.log_prob(z), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_values_that_broadcast_against_the_batch_are_scored(name):
    """log q(z_s | x_m) for every draw s and every datapoint m at once: values (S, B, 1, z)
    against the batch (N,) give (S, B, N), as the aggregate-posterior estimates need."""
    guide, x = make_guide(name), data()
    q = guide.encode(x)
    z = q.sample([2])  # (2, 4, z_dim)
    cross = q.log_prob(z[:, :3].unsqueeze(-2))  # (2, 3, 4)
    assert cross.shape == (2, 3, 4)
    for m in range(4):
        q_m = guide.encode(x[m:m + 1])
        torch.testing.assert_close(cross[:, :, m], q_m.log_prob(z[:, :3].clone()), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["planar", "radial"])
def test_flows_without_inverse_explain_replay(name):
    guide, x = make_guide(name), data()
    q = guide.encode(x)
    z = q.rsample()
    assert torch.isfinite(q.log_prob(z)).all()
    with pytest.raises(NotImplementedError, match="no inverse"):
        q.log_prob(z.clone())


def test_iaf_starts_near_the_identity():
    """Untrained, each step is z -> sigmoid(b) z up to 1% (gate bias b, small MADE outputs):
    training starts from the diagonal guide, rescaled."""
    torch.manual_seed(0)
    guide = IAFGuide(x_dim=X_DIM, z_dim=Z_DIM, hidden_dims=(8,))
    _, h = guide.encode_base(data().float())
    gate = torch.sigmoid(torch.tensor(guide.options.sigmoid_bias))
    z = torch.randn(4, Z_DIM)
    for step in guide.transforms(h)[::2]:
        y = step(z)
        assert ((y - gate * z).abs() < 0.01 * z.abs().max()).all()
        torch.testing.assert_close(step.log_abs_det_jacobian(z, y), Z_DIM * gate.log().expand(4), rtol=0, atol=0.01)


def test_iaf_affine_starts_near_the_identity():
    """Untrained, each affine step is z -> z up to 1% (small MADE outputs: m ~ 0, s ~ 0)."""
    torch.manual_seed(0)
    guide = IAFGuide(x_dim=X_DIM, z_dim=Z_DIM, hidden_dims=(8,), step="affine")
    _, h = guide.encode_base(data().float())
    z = torch.randn(4, Z_DIM)
    for step in guide.transforms(h)[::2]:
        y = step(z)
        assert ((y - z).abs() < 0.01 * z.abs().max()).all()
        assert step.log_abs_det_jacobian(z, y).abs().max() < 0.01


def test_bad_flow_widths_are_rejected():
    with pytest.raises(ValueError, match="flow_hidden_dims"):
        IAFGuide(x_dim=X_DIM, z_dim=5, flow_hidden_dims=(4,))
    with pytest.raises(ValueError, match="num_flows"):
        build(get_guide("planar"), {"z_dim": 2, "num_flows": 0}, fill={"x_dim": X_DIM})


@pytest.mark.parametrize("name", FLOWS)
def test_trains_with_elbo_and_iwae(name):
    x = torch.bernoulli(torch.full((48, 12), 0.3), generator=torch.Generator().manual_seed(0))
    for objective in ("elbo", IWAE(num_particles=3)):
        pyro.clear_param_store()
        torch.manual_seed(0)
        model = VAE(12, 3, (16,))
        registered, variant = VARIANTS.get(name, (name, {}))
        guide = build(get_guide(registered), {"z_dim": 3, "hidden_dims": (16,), **variant}, fill={"x_dim": 12})
        before = [p.detach().clone() for p in guide.flows.parameters()]
        pyro.set_rng_seed(1)
        start = log_likelihood(model, guide, x, num_samples=20)
        result = fit(model, guide, x, objective=objective, epochs=5, batch_size=16, lr=1e-2, progress=False)
        assert all(math.isfinite(row["train_loss"]) for row in result.metrics)
        assert all(not torch.equal(b, p) for b, p in zip(before, guide.flows.parameters()))
        pyro.set_rng_seed(1)
        estimate = log_likelihood(model, guide, x, num_samples=20)
        d = estimate.per_datapoint - start.per_datapoint  # training improved log p(x) on these rows
        assert float(d.mean()) > 3 * float(d.std()) / len(d) ** 0.5, (name, float(d.mean()))
