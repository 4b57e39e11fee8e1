"""Closed-form probabilistic PCA and principal angles: the reference a linear VAE is checked against.

The maximum-likelihood solution of the linear-Gaussian model
:math:`x = W z + b + \\sigma \\epsilon`, :math:`z \\sim \\mathcal{N}(0, I_q)`, is (Tipping & Bishop [1])

.. math::
    b = \\bar x, \\qquad \\sigma^2 = \\frac{1}{D - q} \\sum_{i > q} \\lambda_i, \\qquad
    W = U_q (\\Lambda_q - \\sigma^2 I)_+^{1/2} R,

with :math:`\\lambda_1 \\ge \\dots \\ge \\lambda_D` the eigenvalues of the sample covariance,
:math:`U_q` the first :math:`q` eigenvectors and :math:`R` any rotation. Dai et al. [2] and
Lucas et al. [3] show that a VAE with this decoder and a Gaussian encoder reaches the same
solution, and that the columns of :math:`W` for eigenvalues at the noise level go to zero
(the posterior of those latent directions collapses onto the prior).

>>> import torch
>>> x = torch.randn(500, 5) * torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0])
>>> fit = ppca(x, 2)
>>> fit.weight.shape, bool(principal_angles(fit.weight, torch.eye(5)[:, :2]).max() < 0.2)
(torch.Size([5, 2]), True)

References

[1] Tipping, Bishop. Probabilistic Principal Component Analysis. JRSS B 61(3), 1999
[2] Dai, Wang, Aston, Hua, Wipf. Hidden Talents of the Variational Autoencoder. arXiv:1706.05148
[3] Lucas, Tucker, Grosse, Norouzi. Don't Blame the ELBO! A Linear VAE Perspective on Posterior
    Collapse. NeurIPS 2019
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch


@dataclass
class PPCAFit:
    """The maximum-likelihood pPCA solution.

    :ivar weight: ``(D, q)`` loadings :math:`U_q (\\Lambda_q - \\sigma^2 I)_+^{1/2}`.
    :ivar bias: ``(D,)`` the data mean.
    :ivar noise_var: :math:`\\sigma^2`, the mean of the discarded eigenvalues.
    :ivar eigenvalues: ``(D,)`` of the sample covariance, descending.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    noise_var: torch.Tensor
    eigenvalues: torch.Tensor

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per row: :math:`\\mathcal{N}(x; b, W W^T + \\sigma^2 I)`."""
        eye = torch.eye(len(self.bias), dtype=x.dtype, device=x.device)
        cov = self.weight @ self.weight.T + self.noise_var * eye
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov).log_prob(x)


def ppca(x: torch.Tensor, z_dim: int) -> PPCAFit:
    """The closed-form maximum-likelihood pPCA of the rows of ``x`` with ``z_dim`` components
    (population covariance, divided by N, as the likelihood has it)."""
    n, d = x.shape
    if not 0 < z_dim < d:
        raise ValueError(f"z_dim must be between 1 and D - 1 = {d - 1}, got {z_dim}")
    x = x.double()
    bias = x.mean(0)
    cov = (x - bias).T @ (x - bias) / n
    eigenvalues, vectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    noise_var = eigenvalues[z_dim:].mean()
    weight = vectors[:, :z_dim] * (eigenvalues[:z_dim] - noise_var).clamp_min(0).sqrt()
    return PPCAFit(weight, bias, noise_var, eigenvalues)


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The principal angles (radians, ascending) between the column spaces of ``a`` ``(D, p)``
    and ``b`` ``(D, r)``: :math:`\\arccos` of the singular values of :math:`Q_a^T Q_b`."""
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.arccos(cosines).sort().values


def leading_subspace(weight: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading left singular vectors of ``weight`` ``(D, q)``: the subspace its
    largest columns span, whatever rotation the latent space took."""
    u, _, _ = torch.linalg.svd(weight.double(), full_matrices=False)
    return u[:, :rank]
