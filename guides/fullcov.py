"""The full-covariance Gaussian guide.

.. math:: q_\\phi(z_n \\mid x_n) = \\mathcal{N}(z_n;\\ \\mu_\\phi(x_n),\\ L_\\phi(x_n) L_\\phi(x_n)^\\top),

with :math:`L` lower triangular: its diagonal :math:`\\sigma` is ``softplus`` of free outputs
of the encoder (plus a small floor), so :math:`L` is always a valid Cholesky factor, and by
default (``parametrization="relative"``) :math:`L = \\operatorname{diag}(\\sigma)(I + M)` with
:math:`M` strictly lower, ``offdiag_scale`` times free outputs (``"cholesky"``: :math:`L`'s
strictly lower entries are those). Then :math:`z = \\mu + L\\epsilon` and

.. math:: \\log q(z \\mid x) = -\\tfrac12 \\lVert L^{-1}(z - \\mu) \\rVert^2
          - \\sum_i \\log L_{ii} - \\tfrac{d}{2} \\log 2\\pi.

The off-diagonal outputs start at zero, so an untrained guide is the diagonal one: with
random off-diagonal entries the later coordinates (row ``i`` sums ``i`` of them) start with
a large, correlated variance, and training on MNIST was markedly slower. On MNIST
(784-200-200-50 VAE, 10 epochs, Adam 1e-3, Burda et al.'s initialisation) the ``cholesky``
form was 1.9 nats behind the diagonal guide, ``relative`` 1.0, and ``relative`` with the
off-diagonal outputs scaled by 0.1 (the defaults) 0.3 nats *ahead* (docs/guides.md).

This is the "linear IAF" of Kingma et al.: one affine autoregressive step whose weights
depend on x only. It costs :math:`d(d+1)/2` extra encoder outputs and an :math:`O(d^2)`
triangular solve per datapoint.

References

[1] Kingma et al. Improving Variational Inference with Inverse Autoregressive Flow.
    arXiv:1606.04934 (appendix: linear IAF)
[2] Rezende, Mohamed, Wierstra. Stochastic Backpropagation and Approximate Inference in
    Deep Generative Models. arXiv:1401.4082
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.registry import register_guide


@register_guide("fullcov")
class FullCovNormalGuide(EncoderGuide):
    """An MLP encoder x -> (loc, scale_tril) of a multivariate Normal over the site ``z``.

    The options of :class:`~pyrovae.guides.base.EncoderGuide`, and

    :param str parametrization: ``relative`` (default): L = diag(sigma) (I + M), the strictly
        lower M the encoder's outputs, each row's off-diagonal entries relative to that
        coordinate's scale sigma_i; ``cholesky``: the strictly lower entries of L are the
        outputs themselves.
    :param float offdiag_scale: the off-diagonal outputs are multiplied by it before they enter
        L: Adam's per-weight steps on them, and their gradient into the shared encoder
        layers, shrink by that factor (0.1, measured on MNIST; 1: the outputs as they are).
    :param float min_scale: floor added to the Cholesky diagonal (keeps L invertible).

    >>> guide = FullCovNormalGuide(x_dim=6, z_dim=3, hidden_dims=(8,))
    >>> q = guide.encode(torch.zeros(2, 6))
    >>> q.scale_tril.shape
    torch.Size([2, 3, 3])
    """

    @dataclass
    class Options(EncoderGuide.Options):
        # runs saved before the default became "relative" were trained as "cholesky"
        parametrization: Literal["cholesky", "relative"] = field(default="relative",
                                                                 metadata={"saved_default": "cholesky"})
        # runs saved before the default became 0.1 were trained with 1
        offdiag_scale: float = field(default=0.1, metadata={"saved_default": 1.0})
        min_scale: float = 1e-5

        def __post_init__(self):
            super().__post_init__()
            if not self.offdiag_scale > 0:
                raise ValueError(f"offdiag_scale must be positive, got {self.offdiag_scale}")
            if not self.min_scale >= 0:
                raise ValueError(f"min_scale must be >= 0, got {self.min_scale}")

    def encoder_outputs(self) -> int:
        self.num_offdiag = self.z_dim * (self.z_dim - 1) // 2
        return 2 * self.z_dim + self.num_offdiag

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        z_dim = self.z_dim
        self.min_scale = float(self.options.min_scale)
        self.relative = self.options.parametrization == "relative"
        self.offdiag_scale = float(self.options.offdiag_scale)
        self.init_start_()
        rows, cols = torch.tril_indices(z_dim, z_dim, offset=-1)
        self.register_buffer("tril_rows", rows)
        self.register_buffer("tril_cols", cols)

    @torch.no_grad()
    def init_start_(self) -> None:
        """Start diagonal: zero the off-diagonal outputs' weights and biases (they still get
        gradients). :func:`pyrovae.nn.initialize_` calls it again after redrawing the layers."""
        self.encoder[-1].weight[2 * self.z_dim:].zero_()
        self.encoder[-1].bias[2 * self.z_dim:].zero_()

    def scale_tril(self, raw_diag: torch.Tensor, offdiag: torch.Tensor) -> torch.Tensor:
        """The Cholesky factor ``(..., z_dim, z_dim)`` from raw diagonal and strictly lower entries."""
        diag = F.softplus(raw_diag) + self.min_scale
        unit = torch.diag_embed(torch.ones_like(diag)) if self.relative else torch.diag_embed(diag)
        unit[..., self.tril_rows, self.tril_cols] = self.offdiag_scale * offdiag  # (..., z_dim, z_dim)
        return diag.unsqueeze(-1) * unit if self.relative else unit

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        loc, raw_diag, offdiag = self.encoder(x).split([self.z_dim, self.z_dim, self.num_offdiag], dim=-1)
        return dist.MultivariateNormal(loc, scale_tril=self.scale_tril(raw_diag, offdiag))

