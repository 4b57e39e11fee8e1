"""The shape every amortized guide shares: ``encode(x)`` gives q(z | x), and the Pyro program
samples it inside the plate over the batch; and the options every encoder shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import torch
from pyro.nn import PyroModule

from pyrovae.nn import MLP, check_positive
from pyrovae.registry import Configurable


class EncoderGuide(Configurable, PyroModule):
    """Base class of the suite's guides. It owns the options every encoder shares (declared
    once, in :class:`EncoderGuide.Options`), checks them and keeps ``x_dim``, ``z_dim`` and
    ``site`` as attributes, and builds ``self.encoder``, an MLP from x to
    :meth:`encoder_outputs` values (default ``2 * z_dim``: a location and a scale per
    coordinate; None builds none). A subclass adds its own options by extending ``Options``
    and implements ``encode(x)``, returning a distribution with batch shape ``(N,)``. The
    guide is then

    .. code-block:: python

        with pyro.plate("data", x.shape[0]):
            pyro.sample(self.site, self.encode(x))

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: encoder hidden widths (from x to z).
    :param str activation: encoder nonlinearity.
    :param str site: name of the latent sample site (the model/guide contract).
    """

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 20
        hidden_dims: Tuple[int, ...] = (200, 200)
        activation: str = "tanh"
        site: str = "z"

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer

    site = "z"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x_dim, self.z_dim, self.site = self.options.x_dim, self.options.z_dim, self.options.site
        outputs = self.encoder_outputs()
        if outputs is not None:
            self.encoder = self.mlp(outputs)

    def encoder_outputs(self) -> Optional[int]:
        """The width of ``self.encoder``'s output (None: build no encoder)."""
        return 2 * self.z_dim

    def mlp(self, out_dim: int) -> MLP:
        """The encoder network ``x -> out_dim`` of the shared options (hidden widths, activation)."""
        return MLP(self.x_dim, self.options.hidden_dims, out_dim, self.options.activation)

    def encode(self, x: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **kwargs):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x))
