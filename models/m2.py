"""The semi-supervised generative model M2 (Kingma, Rezende, Mohamed, Welling 2014).

The class label ``y`` of an image ``x`` is a discrete latent variable beside the continuous
style ``z``:

.. math::
    y_n \\sim \\operatorname{Cat}(1/C), \\qquad z_n \\sim \\mathcal{N}(0, I), \\qquad
    x_n \\mid y_n, z_n \\sim \\operatorname{Bernoulli}(\\operatorname{sigmoid} f_\\theta(z_n, y_n))
    \\quad (n = 1..N),

``f_theta`` an MLP on ``[z, onehot(y)]``. For continuous data (``likelihood="gaussian"``, e.g.
the latent means of a VAE in Kingma et al.'s stacked M1+M2) the likelihood is instead
:math:`x_n \\mid y_n, z_n \\sim \\mathcal{N}(f_\\theta(z_n, y_n), \\operatorname{diag}\\sigma^2)`,
``sigma`` learned per dimension (softplus of a parameter, plus 1e-3) or fixed by ``scale``. The guide (guides/m2.py) is
:math:`q_\\phi(y \\mid x)\\, q_\\phi(z \\mid x, y)`: a classifier and a Gaussian encoder. Where
the label is known the guide's ``q(y)`` is the point mass on it, so the bound of a labelled
row is Kingma et al.'s (their eq. 6)

.. math:: \\log p(x, y) \\ge \\mathcal{L}(x, y) = \\mathbb{E}_{q(z \\mid x, y)}
          [\\log p(x \\mid y, z) + \\log p(y) + \\log p(z) - \\log q(z \\mid x, y)],

and where it is not, ``y`` is summed out exactly (their eq. 7), by Pyro's enumeration under the
``enum`` objective (pyrovae/infer/enum.py):

.. math:: \\log p(x) \\ge \\mathcal{U}(x) = \\sum_y q(y \\mid x)\\, \\mathcal{L}(x, y)
          + \\mathcal{H}(q(y \\mid x)).

The model is the generative process, the same for labelled and unlabelled rows: it accepts the
batch's ``y`` and ``labelled`` and reads neither (observing ``y`` is the guide's point mass,
which makes the enumerated sum a single term). Trained with ``enum`` and its classifier term
:math:`\\alpha \\log q(y \\mid x)` on labelled rows (their eq. 9), the classifier
``guide.classify(x)`` is the product; docs/semi-supervised.md has the measured test error.

References

[1] Kingma, Rezende, Mohamed, Welling. Semi-Supervised Learning with Deep Generative Models.
    NeurIPS 2014. arXiv:1406.5298
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

import pyrovae.data.semisupervised  # noqa: F401  (registers the labelled-subset data sets M2 is fit on)
from pyrovae.nn import MLP, check_positive, output_at_data_mean_
from pyrovae.models.base import Model, broadcast_cat
from pyrovae.registry import register_model


def one_hot(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """``(..., num_classes)`` one-hot codes of integer labels ``y`` (any shape, e.g. the
    enumerated ``(C, 1)``), as ``F.one_hot``'s, made by comparison with the classes: ``F.one_hot``
    reads the labels' range on the host (a sync per call, and a step that cannot be replayed,
    pyrovae/training/replay.py); a label outside ``[0, num_classes)`` gives a row of zeros here,
    so callers given labels by a user check them (:meth:`M2.sample`).

    >>> one_hot(torch.tensor([2, 0]), 3)
    tensor([[0., 0., 1.],
            [1., 0., 0.]])
    """
    return (y.long().unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(dtype)


#: the likelihoods of p(x | y, z)
Likelihood = Literal["bernoulli", "gaussian"]
LIKELIHOODS = typing.get_args(Likelihood)


@register_model("m2")
class M2(Model):
    """p(y) p(z) p(x | y, z): Kingma et al.'s M2, a VAE with the class label as a discrete latent.

    :param int x_dim: size of one flattened image (or feature vector).
    :param int num_classes: number of labels C (filled from the data).
    :param int z_dim: dimension of the continuous latent z.
    :param tuple hidden_dims: hidden widths of the decoder ``[z, onehot(y)] -> x``.
    :param str activation: nonlinearity (Kingma et al. use softplus).
    :param str likelihood: ``bernoulli`` (binary pixels) or ``gaussian`` (continuous features).
    :param float scale: the Gaussian's fixed scale; None learns one per dimension.

    >>> model = M2(x_dim=6, num_classes=3, z_dim=2, hidden_dims=(8,))
    >>> model.likelihood(torch.zeros(4, 2), torch.tensor([0, 1, 2, 0])).batch_shape
    torch.Size([4])
    """

    guide_name = "m2"
    likelihoods = LIKELIHOODS

    @dataclass
    class Options:
        x_dim: int
        num_classes: int = 10
        z_dim: int = 50
        hidden_dims: Tuple[int, ...] = (500,)
        activation: str = "softplus"
        likelihood: Likelihood = "bernoulli"
        scale: Optional[float] = None

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, num_classes=self.num_classes, z_dim=self.z_dim,
                           hidden_dims=self.hidden_dims)
            if self.scale is not None:
                if self.likelihood != "gaussian":
                    raise ValueError(f"scale={self.scale} is the Gaussian likelihood's; pass likelihood='gaussian' "
                                     "or drop scale")
                if not self.scale > 0:
                    raise ValueError(f"scale must be positive (or None to learn it), got {self.scale}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.x_dim, self.num_classes, self.z_dim = o.x_dim, o.num_classes, o.z_dim
        self.decoder = MLP(o.z_dim + o.num_classes, o.hidden_dims, o.x_dim, o.activation)
        self.likelihood_name, self.fixed_scale = o.likelihood, o.scale
        if o.likelihood == "gaussian" and o.scale is None:
            self.raw_scale = torch.nn.Parameter(torch.zeros(o.x_dim))

    @property
    def default_init(self) -> str:
        """fit's and the CLI's default init (:func:`pyrovae.nn.default_init`): ``torch`` for the
        ``gaussian`` likelihood, as for ``vae``'s; ``burda`` for binary pixels. Measured on the
        stacked M1+M2 (the default M1's features, 100 labels, 8 epochs, draws 0-2;
        benchmarks/m1m2_mnist.py, docs/semi-supervised.md#m1m2-m2-on-a-vaes-latent-means),
        torch - burda, paired: validation ELBO +0.80 / +1.68 / +2.28 nats, test error -1.72 /
        -1.01 / +0.27 points, -0.82 ± 0.58 (16.92% ± 0.48 against 17.74% ± 0.59)."""
        return "torch" if self.likelihood_name == "gaussian" else "burda"

    def init_from_data(self, x: torch.Tensor, **unused) -> None:
        """Start the decoder's output at the data's mean, for every class (``init="burda"``)."""
        output_at_data_mean_(self.decoder[-1], x, self.likelihood_name)

    def likelihood(self, z: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """p(x | y, z): Bernoulli (logits) or Gaussian (mean) from the decoder, event
        ``(x_dim,)``, batch shape ``z``'s and ``y``'s broadcast."""
        out = self.decoder(broadcast_cat(z, one_hot(y, self.num_classes, z.dtype)))
        if self.likelihood_name == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.gaussian_scale().to(out.dtype).expand(out.shape)).to_event(1)

    def gaussian_scale(self) -> torch.Tensor:
        """The Gaussian likelihood's scale per dimension ``(x_dim,)``: fixed, or softplus of a
        learned parameter plus 1e-3 (so it never collapses to zero)."""
        if self.fixed_scale is not None:
            return torch.full((self.x_dim,), float(self.fixed_scale), device=self.decoder[0].weight.device)
        return F.softplus(self.raw_scale) + 1e-3

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, labelled: Optional[torch.Tensor] = None):
        """The model of a batch ``x`` ``(N, x_dim)``: y and z latent, x observed. The labels
        ``y`` and the mask ``labelled`` of a semi-supervised batch are accepted and not read:
        where a label is known, the guide's point mass on it is what observes it."""
        n = x.shape[0]
        with pyro.plate("data", n):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.num_classes)))
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            return pyro.sample("x", self.likelihood(z, y), obs=x)

    def example_batch(self, n: int = 16) -> dict:
        """A small semi-supervised batch for the contract tests: binary ``x``, labels ``y``
        (-1 where unknown) and the ``labelled`` mask, every other row labelled."""
        g = torch.Generator().manual_seed(0)
        labelled = torch.arange(n) % 2 == 0
        y = torch.randint(self.num_classes, (n,), generator=g)
        return {"x": torch.bernoulli(torch.full((n, self.x_dim), 0.3), generator=g),
                "y": torch.where(labelled, y, torch.full_like(y, -1)), "labelled": labelled}

    @torch.no_grad()
    def sample(self, num_samples: int, y: Optional[torch.Tensor] = None, mean: bool = True) -> torch.Tensor:
        """``(num_samples, x_dim)`` images: y ~ p(y) (uniform over the classes) unless the classes
        ``y`` ``(num_samples,)`` are given, z ~ p(z), then the mean of p(x | y, z) (``mean``) or a draw."""
        device = next(self.parameters()).device
        if y is None:
            y = torch.randint(self.num_classes, (num_samples,), device=device)
        elif len(y) and not (0 <= int(y.min()) and int(y.max()) < self.num_classes):
            raise ValueError(f"the classes y must lie in [0, {self.num_classes}), got {y.min()}..{y.max()}")
        px = self.likelihood(torch.randn(num_samples, self.z_dim, device=device), y.to(device))
        return px.mean if mean else px.sample()
