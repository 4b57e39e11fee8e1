"""Distributions Pyro lacks: the von Mises-Fisher and the uniform on the sphere, and a mixture
of diagonal Gaussians with unbiased pathwise gradients."""

from pyrovae.distributions.bessel import bessel_ratio, log_bessel_iv, log_bessel_ive
from pyrovae.distributions.hyperspherical_uniform import HypersphericalUniform
from pyrovae.distributions.mixture import DiagNormalMixture
from pyrovae.distributions.vmf import VonMisesFisher

__all__ = ["DiagNormalMixture", "HypersphericalUniform", "VonMisesFisher", "bessel_ratio", "log_bessel_iv",
           "log_bessel_ive"]
