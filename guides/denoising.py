"""The denoising variational criterion: encode a corrupted copy of the input.

Im et al. [1] train the encoder on corrupted inputs :math:`\\tilde x \\sim p(\\tilde x \\mid x)`:

.. math:: \\mathcal{L}_{dvae}(x) = E_{p(\\tilde x \\mid x)}\\,
          E_{q_\\phi(z \\mid \\tilde x)}\\Big[\\log \\frac{p_\\theta(x, z)}{q_\\phi(z \\mid \\tilde x)}\\Big],

a lower bound on :math:`\\log p(x)` for every corruption (each inner term is an ELBO with
proposal :math:`q(z \\mid \\tilde x)`). This guide wraps any registered base guide and hands
it :math:`\\tilde x` instead of :math:`x` while training (``self.training``); in eval mode
(evaluation runs under :func:`pyrovae.evaluation.log_likelihood.eval_mode`) the input is left as it is, so
log-likelihoods are those of the base guide on clean data. One corruption is drawn per
datapoint and shared by all particles of that datapoint.

Corruptions: ``gaussian`` adds :math:`\\mathcal{N}(0, \\sigma^2)` noise with
:math:`\\sigma` = ``noise_level``; ``salt_and_pepper`` replaces each coordinate, with
probability ``noise_level``, by 0 or 1 (each with probability 1/2); ``salt_and_pepper_im``
is the corruption of Im et al.'s code (``get_corrupted_input``, ``ntype='salt_pepper'``):
each coordinate replaced, with probability :math:`p` = ``noise_level``, by a draw of
Bernoulli(:math:`p`), so salt (1) with probability :math:`p^2` and pepper (0) with
:math:`p (1 - p)`: at :math:`p = 0.1`, 1% of the pixels turn white where ``salt_and_pepper``
turns 5% (docs/hidden-talents.md measures the difference).

References

[1] Im, Ahn, Memisevic, Bengio. Denoising Criterion for Variational Auto-Encoding Framework.
    arXiv:1511.06406
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Literal

import torch

from pyrovae.guides.base import EncoderGuide, model_name_of
from pyrovae.registry import build, constructor_options, get_guide, register_guide

Noise = Literal["gaussian", "salt_and_pepper", "salt_and_pepper_im"]
NOISES = typing.get_args(Noise)


def corrupt(x: torch.Tensor, noise: str, noise_level: float) -> torch.Tensor:
    """One draw of :math:`\\tilde x \\sim p(\\tilde x \\mid x)` (same shape, device, dtype)."""
    if noise == "gaussian":
        return x + noise_level * torch.randn_like(x)
    if noise == "salt_and_pepper":
        flip = torch.rand_like(x) < noise_level
        value = (torch.rand_like(x) < 0.5).to(x.dtype)
        return torch.where(flip, value, x)
    if noise == "salt_and_pepper_im":
        flip = torch.rand_like(x) < noise_level
        value = (torch.rand_like(x) < noise_level).to(x.dtype)
        return torch.where(flip, value, x)
    raise ValueError(f"unknown noise {noise!r}; choose one of {NOISES}")


@register_guide("denoising")
class DenoisingGuide(EncoderGuide):
    """A base guide (by registry name) that sees corrupted inputs in training mode.

    The options of :class:`~pyrovae.guides.base.EncoderGuide`, handed to the base guide (those
    it accepts), and

    :param str noise: ``gaussian``, ``salt_and_pepper`` or ``salt_and_pepper_im`` (Im et
        al.'s code's: salt with probability ``noise_level**2``).
    :param float noise_level: the Gaussian noise's standard deviation, or the probability
        that a coordinate is replaced by salt or pepper.
    :param str base: the registered guide to wrap (``diag``, ``iaf``, ``mixture``, ...).

    >>> guide = DenoisingGuide(x_dim=64, z_dim=2, noise="salt_and_pepper", noise_level=0.25)
    >>> guide.encode(torch.zeros(3, 64)).event_shape
    torch.Size([2])
    """

    @dataclass
    class Options(EncoderGuide.Options):
        noise: Noise = "salt_and_pepper"
        noise_level: float = 0.1
        base: str = "diag"

        def __post_init__(self):
            super().__post_init__()
            if not self.noise_level >= 0 or (self.noise != "gaussian" and self.noise_level > 1):
                raise ValueError(f"noise_level must be >= 0 (a probability <= 1 for salt_and_pepper), "
                                 f"got {self.noise_level}")
            if self.base == "denoising":
                raise ValueError("base must be another guide than 'denoising'")

    def encoder_outputs(self) -> None:
        return None  # the base guide has the encoder

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        factory = get_guide(o.base)
        accepted = constructor_options(factory)
        shared = {f.name: getattr(o, f.name) for f in fields(EncoderGuide.Options)}
        self.base = build(factory, {k: v for k, v in shared.items() if k in accepted})
        self.noise, self.noise_level, self.base_name = o.noise, float(o.noise_level), o.base
        # pair with the base guide's model (an instance attribute: the class default is Guide's)
        self.model_name = model_name_of(type(self.base))

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` corrupted in training mode, ``x`` itself in eval mode."""
        if not self.training or self.noise_level == 0:
            return x
        return corrupt(x, self.noise, self.noise_level)

    def encode(self, x: torch.Tensor):
        """The base guide's q(z | x~), x~ the (training-mode) corruption of ``x``."""
        return self.base.encode(self.corrupt(x))

    def forward(self, x: torch.Tensor, **kwargs):
        return self.base(self.corrupt(x), **kwargs)
