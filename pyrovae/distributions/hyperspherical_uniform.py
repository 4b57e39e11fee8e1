"""The uniform distribution on the unit sphere :math:`S^{d-1} \\subset \\mathbb{R}^d`.

.. math:: p(z) = \\frac{1}{|S^{d-1}|}, \\qquad
          |S^{d-1}| = \\frac{2 \\pi^{d/2}}{\\Gamma(d/2)},

the prior of the hyperspherical VAE [1]; samples are normalized standard Gaussians.

References

[1] Davidson, Falorsi, De Cao, Kipf, Tomczak. Hyperspherical Variational Auto-Encoders.
    arXiv:1804.00891
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints


def log_sphere_area(dim: int) -> float:
    """:math:`\\log |S^{dim-1}|`, the log surface area of the unit sphere in R^dim."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


class HypersphericalUniform(TorchDistribution):
    """Uniform on :math:`S^{dim-1}`, event shape ``(dim,)``.

    :param int dim: the ambient dimension d (the sphere is d-1 dimensional), at least 2.
    :param batch_shape: the batch shape (e.g. ``(N,)`` inside a data plate).
    :param device: where samples are created (default: CPU).
    :param dtype: their dtype (default: torch's default dtype).

    >>> p = HypersphericalUniform(3, batch_shape=(4,))
    >>> p.sample().norm(dim=-1)
    tensor([1.0000, 1.0000, 1.0000, 1.0000])
    >>> round(float(p.log_prob(p.sample())[0]), 4)  # -log(4 pi)
    -2.531
    """

    arg_constraints = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, dim: int, batch_shape=torch.Size(), *, device=None, dtype=None, validate_args=None):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"HypersphericalUniform needs an integer dim >= 2 (the sphere S^(dim-1)), got {dim!r}")
        self.dim = dim
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._dtype = dtype if dtype is not None else torch.get_default_dtype()
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new.dim, new._device, new._dtype = self.dim, self._device, self._dtype
        super(HypersphericalUniform, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def log_normalizer(self) -> float:
        """:math:`\\log |S^{d-1}|`."""
        return log_sphere_area(self.dim)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        x = torch.randn(shape, device=self._device, dtype=self._dtype)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(self._dtype).tiny)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return value.new_full(shape, -self.log_normalizer)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, self.log_normalizer, device=self._device, dtype=self._dtype)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self._extended_shape(), device=self._device, dtype=self._dtype)
