"""A linear-Gaussian model with known parameters and guides built from its exact posterior,
shared by the evaluation tests (AIS, k-hat, gap split, monitors)."""

import pyro
import pyro.distributions as dist
import torch

from pyrovae.models import LinearGaussianVAE


def linear_gaussian(x_dim=4, z_dim=2, noise=0.5, orthogonal=False, seed=0, weight=None):
    """p(z) = N(0, I), x = W z + b + noise * eps, with fixed W and b (no gradients needed).

    ``orthogonal``: W has orthogonal columns, so the exact posterior covariance
    ``(I + W^T W / s^2)^{-1}`` is diagonal and a diagonal-Gaussian guide can be exact.
    """
    gen = torch.Generator().manual_seed(seed)
    model = LinearGaussianVAE(x_dim, z_dim, init_scale=noise)
    if weight is None:
        weight = torch.randn(x_dim, z_dim, generator=gen)
    weight = torch.as_tensor(weight, dtype=torch.float32)
    if orthogonal:
        q, _ = torch.linalg.qr(weight)
        weight = q * torch.linspace(2.0, 1.0, z_dim)
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(torch.randn(x_dim, generator=gen))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def simulate_x(model, n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.z_dim, generator=gen)
    return z @ model.weight.T + model.bias + model.noise_scale * torch.randn(n, model.x_dim, generator=gen)


class ExactPosteriorGuide:
    """q(z | x) = the exact posterior p(z | x) (full covariance), its scale multiplied by ``factor``."""

    def __init__(self, model, factor=1.0):
        self.model, self.factor = model, factor

    def __call__(self, x):
        post = self.model.posterior(x)
        q = dist.MultivariateNormal(post.loc, scale_tril=self.factor * post.scale_tril)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", q)


class DiagExactGuide:
    """The exact posterior as ``Normal(loc, scale).to_event(1)`` (exact when W is orthogonal)."""

    def __init__(self, model):
        self.model = model

    def encode(self, x):
        post = self.model.posterior(x)
        return dist.Normal(post.loc, post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()).to_event(1)

    def __call__(self, x):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.encode(x))
