"""The LSTM encoders of the sentence VAEs (models/sentence.py).

An LSTM reads the sentence's words :math:`w_1..w_T` (``<eos>`` included, padding excluded: its
state at the last real word is read) and that state :math:`h_T` gives the posterior of the one
global latent:

.. math::
    q(z \\mid x) &= \\mathcal{N}(\\mu(h_T), \\operatorname{diag}\\sigma^2(h_T))
        \\quad\\text{(sentence: Bowman et al.)}, \\\\
    q(z \\mid x) &= \\operatorname{vMF}(\\mu(h_T) / \\|\\mu(h_T)\\|,\\ \\kappa)
        \\quad\\text{(sentence-vmf: Xu \\& Durrett)},

with :math:`\\kappa` a fixed constant by default (``fixed_kappa``; None learns
:math:`\\kappa = \\operatorname{softplus}(k(h_T)) + 1`). With a fixed :math:`\\kappa` the KL from
the vMF to the uniform prior on :math:`S^{d-1}` is a constant,

.. math:: \\mathrm{KL} = \\kappa A_d(\\kappa) + \\log C_d(\\kappa) + \\log \\frac{2\\pi^{d/2}}{\\Gamma(d/2)},

so it cannot collapse to zero however the model is trained (Xu & Durrett). The vMF is
:class:`~pyrovae.distributions.VonMisesFisher` (Wood's sampler, the closed-form KL to the uniform).

References

[1] Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio. Generating Sentences from a Continuous
    Space. CoNLL 2016. arXiv:1511.06349
[2] Xu, Durrett. Spherical Latent Spaces for Stable Variational Autoencoders. EMNLP 2018.
    arXiv:1808.10805
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.distributions import VonMisesFisher
from pyrovae.models.sentence import PAD_ID, SentenceOptions, as_mask
from pyrovae.guides.base import Guide
from pyrovae.registry import register_guide

__all__ = ["SentenceGuide", "SentenceVMFGuide", "SentenceEncoder"]


class SentenceEncoder(nn.Module):
    """Embedding and LSTM: the last real state :math:`h_T` of each sentence, ``(N, H)``."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp(min=1)  # (N,): each sentence's first `length` steps are read
        steps = int(lengths.max())  # one host sync; later steps are padding in every row
        # padded, not packed, up to the longest: the state at step length - 1 is the packed LSTM's last
        # state (the LSTM is causal), and on a CPU a packed LSTM's backward zero-fills a gradient of all
        # the packed steps at every step
        out, _ = self.lstm(self.embed(x[:, :steps]))  # (N, steps, H)
        return out[torch.arange(x.shape[0], device=x.device), lengths - 1]


@register_guide("sentence")
class SentenceGuide(Guide):
    """q(z | x) of the sentence VAE: an LSTM encoder, a diagonal Normal from its last state.

    :param int vocab_size: ids in the vocabulary (from the data set).
    :param int z_dim: latent size (the model's).
    :param int embed_dim: word embedding size.
    :param int hidden_dim: LSTM state size.
    :param str site: the latent site's name.

    >>> guide = SentenceGuide(vocab_size=20, z_dim=4, embed_dim=8, hidden_dim=8)
    >>> guide.encode(torch.tensor([[5, 6, 2]])).batch_shape
    torch.Size([1])
    """

    replays_step = False  # the encoder reads the batch's longest sentence on the host (one sync)

    model_name = "sentence-vae"

    @dataclass
    class Options(SentenceOptions):
        vocab_size: int
        z_dim: int = 32
        embed_dim: int = 128
        hidden_dim: int = 256
        site: str = "z"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.z_dim, self.site = o.z_dim, o.site
        self.encoder = SentenceEncoder(o.vocab_size, o.embed_dim, o.hidden_dim)
        self.head = nn.Linear(o.hidden_dim, self.head_outputs())

    def head_outputs(self) -> int:
        return 2 * self.z_dim

    def encode(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> dist.Distribution:
        """q(z | x): batch ``(N,)``, event ``(z_dim,)``."""
        loc, raw = self.head(self.encoder(x, as_mask(x, mask))).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def posterior_mean(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The point a homotopy starts from: the posterior mean ``(N, z_dim)``."""
        return self.encode(x, mask).mean

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x, mask))


@register_guide("sentence-vmf")
class SentenceVMFGuide(SentenceGuide):
    """q(z | x) of the spherical sentence VAE: an LSTM encoder, a vMF with a fixed concentration.

    The options of :class:`SentenceGuide` (``z_dim`` >= 2: z lies on S^(z_dim-1)), and

    :param float fixed_kappa: the constant concentration (Xu & Durrett); None learns it.
    """

    model_name = "sentence-svae"

    @dataclass
    class Options(SentenceGuide.Options):
        fixed_kappa: Optional[float] = 50.0

        def __post_init__(self):
            super().__post_init__()
            if self.z_dim < 2:
                raise ValueError(f"a vMF guide needs z_dim >= 2 (z lies on S^(z_dim-1)), got {self.z_dim}")
            if self.fixed_kappa is not None and not self.fixed_kappa > 0:
                raise ValueError(f"fixed_kappa must be positive (or None to learn it), got {self.fixed_kappa}")

    def head_outputs(self) -> int:
        return self.z_dim + (self.options.fixed_kappa is None)

    def encode(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> VonMisesFisher:
        out = self.head(self.encoder(x, as_mask(x, mask)))
        loc = F.normalize(out[..., :self.z_dim], dim=-1)
        if self.options.fixed_kappa is None:
            kappa = F.softplus(out[..., self.z_dim]) + 1
        else:
            kappa = out.new_full(out.shape[:-1], float(self.options.fixed_kappa))
        return VonMisesFisher(loc, kappa)

    def posterior_mean(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mean direction :math:`\\mu` ``(N, z_dim)`` (a unit vector: the homotopies' ends)."""
        return self.encode(x, mask).loc
