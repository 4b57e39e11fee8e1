"""The shape every amortized guide shares: ``encode(x)`` gives q(z | x), and the Pyro program
samples it inside the plate over the batch."""

from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule


class EncoderGuide(PyroModule):
    """Base class of the suite's guides. A subclass sets ``self.site`` and implements
    ``encode(x)``, returning a distribution with batch shape ``(N,)``; the guide is then

    .. code-block:: python

        with pyro.plate("data", x.shape[0]):
            pyro.sample(self.site, self.encode(x))
    """

    site = "z"

    def encode(self, x: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **kwargs):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x))
