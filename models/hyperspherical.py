"""The hyperspherical VAE's generative model: a uniform prior on the sphere.

.. math::
    z_n \\sim \\mathcal{U}(S^{z\\_dim - 1}), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n) \\quad (n = 1..N),

the :class:`~pyrovae.models.vae.VAE` with its Gaussian prior replaced by the uniform
distribution on the unit sphere in :math:`\\mathbb{R}^{z\\_dim}`. It pairs with the
von Mises-Fisher guide (``vmf``), whose KL to this prior is known in closed form
(``meanfield`` uses it). On data with a spherical or directional structure, and at small
latent dimension, Davidson et al. report better log-likelihoods than the Gaussian VAE.

References

[1] Davidson, Falorsi, De Cao, Kipf, Tomczak. Hyperspherical Variational Auto-Encoders.
    arXiv:1804.00891
[2] Xu, Durrett. Spherical Latent Spaces for Stable Variational Autoencoders. arXiv:1808.10805
"""

from __future__ import annotations

from typing import Optional, Tuple

from pyrovae.distributions import HypersphericalUniform
from pyrovae.models.vae import VAE
from pyrovae.registry import register_model


@register_model("svae")
class HypersphericalVAE(VAE):
    """p(z) p(x | z) with z uniform on :math:`S^{z\\_dim-1}` and an MLP decoder.

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: the latent's ambient dimension (z lies on the sphere S^(z_dim-1)); >= 2.
    :param tuple hidden_dims: decoder hidden widths (from z to x).
    :param str likelihood: ``bernoulli``, ``gaussian`` or ``continuous_bernoulli``.
    :param float scale: fixed Gaussian scale; None learns one per dimension.
    :param str activation: decoder nonlinearity.

    >>> model = HypersphericalVAE(x_dim=64, z_dim=3)
    >>> model.prior(5).sample().norm(dim=-1)
    tensor([1.0000, 1.0000, 1.0000, 1.0000, 1.0000])
    """

    guide_name = "vmf"

    # Defining __init__ (not inheriting VAE's) lets the registry record this class's options.
    def __init__(
        self,
        x_dim: int,
        z_dim: int = 10,
        hidden_dims: Tuple[int, ...] = (200, 200),
        likelihood: str = "bernoulli",
        scale: Optional[float] = None,
        activation: str = "tanh",
    ):
        if isinstance(z_dim, int) and z_dim < 2:
            raise ValueError(f"the hyperspherical VAE needs z_dim >= 2 (z lies on S^(z_dim-1)), got {z_dim}")
        super().__init__(x_dim, z_dim, hidden_dims, likelihood, scale, activation)

    def prior(self, num_samples: int) -> HypersphericalUniform:
        """p(z) for ``num_samples`` datapoints: uniform on the sphere, batch ``(num_samples,)``."""
        return HypersphericalUniform(
            self.z_dim, (num_samples,), device=self.prior_loc.device, dtype=self.prior_loc.dtype
        )
