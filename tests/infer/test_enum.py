"""The ``enum`` objective: the enumerated sum is the explicit sum over the labels, labelled rows
give their observed-label term only, and the classifier term has its weight."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyrovae import fit
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.infer.objectives import make_objective, objective_record
from pyrovae.models.m2 import M2
from pyrovae.training.cuda_graph import graph_safe

C, D = 3, 5


def tiny_mixture():
    """y ~ Cat(pi), x | y ~ Bernoulli(theta_y) (no continuous latent), guide q(y | x) = Cat(softmax(W x + b))."""
    g = torch.Generator().manual_seed(0)
    log_pi = torch.randn(C, generator=g).log_softmax(-1)
    theta = torch.rand(C, D, generator=g) * 0.8 + 0.1
    W, b = torch.randn(D, C, generator=g).requires_grad_(), torch.randn(C, generator=g)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=log_pi))
            pyro.sample("x", dist.Bernoulli(theta[y]).to_event(1), obs=x)

    def guide(x, logits=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=x @ W + b if logits is None else logits),
                        infer={"enumerate": "parallel"})

    return model, guide, log_pi, theta, (W, b)


def test_enumerated_elbo_is_the_explicit_sum_over_labels_closed_form():
    model, guide, log_pi, theta, (W, b) = tiny_mixture()
    x = torch.bernoulli(torch.full((7, D), 0.4), generator=torch.Generator().manual_seed(1))
    loss = EnumELBO(alpha=0.0)(model, guide, {"x": x})
    log_q = (x @ W + b).detach().log_softmax(-1)  # (N, C)
    log_joint = log_pi + dist.Bernoulli(theta).log_prob(x.unsqueeze(1)).sum(-1)  # (N, C): log p(x, y)
    elbo = (log_q.exp() * (log_joint - log_q)).sum(-1)  # sum_y q(y | x) [log p(x, y) - log q(y | x)]
    assert torch.allclose(loss, -elbo.mean(), atol=1e-5)
    # with q the exact posterior the bound is log p(x), no Monte Carlo anywhere
    posterior = log_joint.log_softmax(-1).requires_grad_()  # (a leaf: the loss must be differentiable)
    exact = EnumELBO(alpha=0.0)(model, lambda x: guide(x, logits=posterior), {"x": x})
    assert torch.allclose(exact, -torch.logsumexp(log_joint, -1).mean(), atol=1e-5)


def m2_pair(seed=0):
    torch.manual_seed(seed)
    sizes = dict(x_dim=D, num_classes=C, z_dim=2, hidden_dims=(6,))
    return M2(**sizes), M2Guide(**sizes)


def per_label_elbo(model, guide, x, eps):
    """L(x, y) for every label, (C, N), with z = loc + scale * eps[y] (the draws enumeration makes)."""
    rows = []
    for y in range(C):
        label = torch.full((len(x),), y)
        q = guide.encode(x, label)
        z = q.base_dist.loc + q.base_dist.scale * eps[y]
        log_p = (math.log(1 / C) + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 + model.likelihood(z, label).log_prob(x))
        rows.append(log_p - q.log_prob(z))
    return torch.stack(rows)


def test_m2_enumerated_sum_equals_the_sum_of_per_label_elbos():
    model, guide = m2_pair()
    x = torch.bernoulli(torch.full((4, D), 0.5), generator=torch.Generator().manual_seed(2))
    pyro.set_rng_seed(3)
    loss = EnumELBO(alpha=0.0)(model, guide, {"x": x})
    pyro.set_rng_seed(3)
    eps = torch.randn(C, len(x), 2)  # the one draw of z per enumerated label, same stream
    L = per_label_elbo(model, guide, x, eps)  # (C, N)
    log_q = guide.classify(x).log_softmax(-1).T  # (C, N)
    unlabelled = (log_q.exp() * (L - log_q)).sum(0)  # U(x) = sum_y q(y|x) L(x,y) + H(q)
    assert torch.allclose(loss, -unlabelled.mean(), atol=1e-4), (loss, -unlabelled.mean())


def test_labelled_rows_contribute_their_observed_label_term_only():
    model, guide = m2_pair()
    x = torch.bernoulli(torch.full((6, D), 0.5), generator=torch.Generator().manual_seed(2))
    y = torch.tensor([2, 0, 1, 1, 0, 2])
    labelled = torch.tensor([True, True, True, False, False, False])
    batch = {"x": x, "y": torch.where(labelled, y, -1), "labelled": labelled}
    pyro.set_rng_seed(5)
    loss = EnumELBO(alpha=0.0)(model, guide, batch)
    pyro.set_rng_seed(5)
    eps = torch.randn(C, len(x), 2)
    L = per_label_elbo(model, guide, x, eps)
    log_q = guide.classify(x).log_softmax(-1).T
    expected = torch.where(labelled, L[y.clamp(min=0), torch.arange(6)], (log_q.exp() * (L - log_q)).sum(0))
    assert torch.allclose(loss, -expected.mean(), atol=1e-4), (loss, -expected.mean())
    # the classifier does not enter the labelled rows' term: no gradient reaches it at alpha = 0
    only = {k: v[:3] for k, v in batch.items()}
    EnumELBO(alpha=0.0)(model, guide, only).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in guide.classifier.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in guide.encoder.parameters())


def test_classifier_term_has_its_weight_on_labelled_rows_only():
    model, guide = m2_pair()
    x = torch.bernoulli(torch.full((6, D), 0.5), generator=torch.Generator().manual_seed(2))
    labelled = torch.tensor([True, False, True, False, True, False])
    batch = {"x": x, "y": torch.where(labelled, torch.tensor([1, 0, 2, 0, 0, 1]), -1), "labelled": labelled}
    losses = {}
    for alpha in (0.0, 2.5):
        pyro.set_rng_seed(7)
        losses[alpha] = EnumELBO(alpha=alpha)(model, guide, batch)
    log_q = F.log_softmax(guide.classify(x), -1)[torch.arange(6), batch["y"].clamp(min=0)]
    term = (log_q * labelled).sum() / 6
    assert torch.allclose(losses[2.5] - losses[0.0], -2.5 * term, atol=1e-5)
    # a batch without the mask has no classifier term, whatever alpha
    plain = {"x": x}
    pyro.set_rng_seed(7)
    a = EnumELBO(alpha=0.0)(model, guide, plain)
    pyro.set_rng_seed(7)
    assert torch.allclose(a, EnumELBO(alpha=3.0)(model, guide, plain))


def test_classifier_term_needs_a_classify_method():
    model, guide, *_ = tiny_mixture()
    x = torch.ones(2, D)
    batch = {"x": x, "y": torch.tensor([0, -1]), "labelled": torch.tensor([True, False])}
    with pytest.raises(ValueError, match="classify"):
        EnumELBO(alpha=1.0)(model, lambda x, y=None, labelled=None: guide(x), batch)
    with pytest.raises(ValueError, match="alpha >= 0"):
        EnumELBO(alpha=-1.0)


def test_enum_is_registered_saved_and_takes_the_eager_route():
    objective = make_objective("enum", alpha=0.3, beta=0.5)
    assert isinstance(objective, EnumELBO)
    assert objective_record(objective) == {"name": "enum", "beta": 0.5, "warmup_steps": 0, "alpha": 0.3,
                                           "num_particles": 1, "max_plate_nesting": 0, "labels": "y"}
    assert not graph_safe(objective)  # never captured in a CUDA graph (replayed on a CPU: tests/training/test_replay.py)


def test_any_pair_with_a_discrete_site_fits_with_enum():
    """A mixture of Bernoullis as plain functions with pyro.param: enum trains it (the loss falls)."""
    pyro.clear_param_store()
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.9] * D, [0.1] * D])
    x = torch.bernoulli(centres[torch.randint(2, (64,), generator=g)], generator=g)

    def model(x):
        logits = pyro.param("theta", torch.randn(2, D, generator=torch.Generator().manual_seed(1)))
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(2)))
            pyro.sample("x", dist.Bernoulli(logits=logits[y]).to_event(1), obs=x)

    def guide(x):
        w = pyro.param("w", torch.zeros(D, 2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=x @ w), infer={"enumerate": "parallel"})

    result = fit(model, guide, x, objective="enum", epochs=30, batch_size=16, lr=0.1, progress=False)
    losses = [m["train_loss"] for m in result.metrics]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.3
