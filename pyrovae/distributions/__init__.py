"""Distributions Pyro lacks: the von Mises-Fisher and the uniform on the sphere."""

from pyrovae.distributions.bessel import bessel_ratio, log_bessel_iv, log_bessel_ive
from pyrovae.distributions.hyperspherical_uniform import HypersphericalUniform
from pyrovae.distributions.vmf import VonMisesFisher

__all__ = ["HypersphericalUniform", "VonMisesFisher", "bessel_ratio", "log_bessel_iv", "log_bessel_ive"]
