"""The guide of M2 (Kingma, Rezende, Mohamed, Welling 2014): a classifier and an encoder,

.. math:: q_\\phi(y, z \\mid x) = q_\\phi(y \\mid x)\\, q_\\phi(z \\mid x, y), \\qquad
          q_\\phi(y \\mid x) = \\operatorname{Cat}(\\operatorname{softmax} c_\\phi(x)), \\qquad
          q_\\phi(z \\mid x, y) = \\mathcal{N}(\\mu_\\phi(x, y), \\operatorname{diag}\\sigma^2_\\phi(x, y)).

**How a batch carries labels.** A batch is ``{"x": (N, D), "y": (N,) int64, "labelled": (N,)
bool}``; ``y`` is read only where ``labelled`` is True (the data sets store -1 elsewhere).
On a labelled row the guide's ``q(y)`` is the point mass on the known label (logits 0 there
and -1e4 elsewhere: its probabilities are exactly 1 and 0 in float32), so under enumeration
the row's bound is the single term :math:`\\mathcal{L}(x, y)`; on an unlabelled row it is
the classifier, and the enumerated sum is :math:`\\mathcal{U}(x)`. A batch without
``labelled`` (test data, ``pyrovae evaluate``) is all unlabelled, so importance sampling gives
:math:`\\log p(x)`, with y drawn from the classifier. The site ``y`` is marked for parallel
enumeration (``infer={"enumerate": "parallel"}``): the ``enum`` objective sums it out; any other
objective samples it.

The classifier term of the ``enum`` objective reads :meth:`M2Guide.classify`. Pairs with
models/m2.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.guides.base import EncoderGuide
from pyrovae.models.m2 import one_hot
from pyrovae.nn import MLP, check_positive
from pyrovae.registry import register_guide

#: the logit of the labels a labelled row does not have: exp(-1e4) is 0 in float32 and bfloat16
PINNED_LOGIT = -1e4


def first_layer_split(mlp: MLP, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """``mlp([x, code])`` with the first layer applied to ``x`` and ``code`` apart and summed, so
    that ``x`` ``(N, D)`` goes through it once for every enumerated label ``code`` ``(C, 1, k)``."""
    first = mlp[0]
    d = x.shape[-1]
    h = F.linear(x, first.weight[:, :d], first.bias) + F.linear(code, first.weight[:, d:])
    for layer in list(mlp)[1:]:
        h = layer(h)
    return h


@register_guide("m2")
class M2Guide(EncoderGuide):
    """q(y | x) q(z | x, y): M2's classifier and encoder, the label pinned where it is known.

    Options: :class:`~pyrovae.guides.base.EncoderGuide`'s (x_dim, z_dim, hidden_dims,
    activation, site) and ``num_classes`` (filled from the data); the classifier and the
    encoder both have ``hidden_dims``.

    >>> guide = M2Guide(x_dim=6, num_classes=3, z_dim=2, hidden_dims=(8,))
    >>> guide.classify(torch.zeros(4, 6)).shape
    torch.Size([4, 3])
    """

    model_name = "m2"
    objective_name = "enum"
    #: tests/contract.py checks the IWAE objective on guides "with a density"; IWAE needs a
    #: reparameterized guide and y is discrete (tests/models/test_m2.py checks log_likelihood)
    has_density = False

    @dataclass
    class Options(EncoderGuide.Options):
        num_classes: int = 10
        z_dim: int = 50
        hidden_dims: Tuple[int, ...] = (500,)
        activation: str = "softplus"

        def __post_init__(self):
            super().__post_init__()
            check_positive(num_classes=self.num_classes)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.num_classes = o.num_classes
        self.classifier = MLP(o.x_dim, o.hidden_dims, o.num_classes, o.activation)
        self.encoder = MLP(o.x_dim + o.num_classes, o.hidden_dims, 2 * o.z_dim, o.activation)

    def encoder_outputs(self) -> Optional[int]:
        return None  # built in __init__: the encoder reads [x, onehot(y)]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(y | x), ``(N, num_classes)``."""
        return self.classifier(x)

    def label_logits(self, x: torch.Tensor, y: Optional[torch.Tensor] = None,
                     labelled: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The logits of the guide's q(y): the classifier's, and the point mass on ``y`` where
        ``labelled``."""
        logits = self.classify(x)
        if labelled is None:
            return logits
        if y is None:
            raise ValueError("a batch with a 'labelled' mask needs the labels 'y' too (-1 where unknown)")
        labelled = labelled.bool()
        known = torch.where(labelled, y.long(), torch.zeros_like(y, dtype=torch.long))
        pinned = torch.full_like(logits, PINNED_LOGIT).scatter(-1, known.unsqueeze(-1), 0.0)
        return torch.where(labelled.unsqueeze(-1), pinned, logits)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """q(z | x, y), batch shape the broadcast of ``x.shape[:-1]`` and ``y.shape``."""
        loc, raw = first_layer_split(self.encoder, x, one_hot(y, self.num_classes, x.dtype)).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, labelled: Optional[torch.Tensor] = None):
        with pyro.plate("data", x.shape[0]):
            label = pyro.sample("y", dist.Categorical(logits=self.label_logits(x, y, labelled)),
                                infer={"enumerate": "parallel"})
            return pyro.sample(self.site, self.encode(x, label))

    @torch.no_grad()
    def error_rate(self, data: dict, batch_size: int = 1000) -> float:
        """The classifier's error rate on ``data`` (``{"x", "y"}``, all labels known), in [0, 1]."""
        wrong = 0
        for start in range(0, len(data["x"]), batch_size):
            x, y = data["x"][start:start + batch_size], data["y"][start:start + batch_size]
            wrong += int((self.classify(x).argmax(-1) != y.to(x.device)).sum())
        return wrong / len(data["x"])

    def report_lines(self, test: dict) -> List[str]:
        """What ``pyrovae fit`` prints about the classifier at its end."""
        if "y" not in test:
            return []
        return [f"test classification error: {100 * self.error_rate(test):.2f}% ({len(test['y'])} images)"]
