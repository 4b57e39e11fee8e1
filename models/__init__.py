"""Generative models (Pyro model functions as PyroModules), registered by name."""

from pyrovae.models.vae import VAE

__all__ = ["VAE"]
