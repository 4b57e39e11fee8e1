"""The guide of the RNN semantic seq2seq VAE (models/seq2seq.py): q(z | s, t).

The guide reads the source with its own semantic encoder (Jang et al.'s
:math:`v(s) = [h_S; \\sum_i a_i h_i]`, a bidirectional LSTM with attention of the final state over
every state) and the target with the sentence VAE's LSTM encoder
(:class:`~pyrovae.guides.sentence.SentenceEncoder`, its state at the last real word
:math:`h_T(t)`), and gives a diagonal Gaussian:

.. math::
    q(z \\mid s, t) = \\mathcal{N}\\big(\\mu([v(s); h_T(t)]),\\ \\operatorname{diag}\\sigma^2([v(s); h_T(t)])\\big).

With ``read_target=False`` it is the paper's :math:`q(z \\mid s)` from :math:`v(s)` alone (then,
with the model's conditional prior, the ELBO's KL is between two Gaussians of the source only).

References

[1] Jang, Seo, Kang. Recurrent Neural Network-Based Semantic Variational Autoencoder for
    Sequence-to-Sequence Learning. arXiv:1802.03238; Information Sciences 490 (2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.guides.sentence import SentenceEncoder
from pyrovae.models.sentence import as_mask
from pyrovae.models.seq2seq import SemanticEncoder, Seq2SeqOptions, source_mask_of
from pyrovae.guides.base import Guide
from pyrovae.registry import register_guide

__all__ = ["Seq2SeqGuide"]


@register_guide("seq2seq")
class Seq2SeqGuide(Guide):
    """q(z | s, t) of ``seq2seq-vae``: the semantic vector of the source and the last LSTM state of
    the target, a diagonal Normal.

    :param int vocab_size: ids in the vocabulary.
    :param int z_dim: latent size (the model's).
    :param int embed_dim: word embedding size.
    :param int hidden_dim: the target LSTM's state size.
    :param int encoder_dim: the source LSTM's state size per direction.
    :param bool read_target: False: q(z | s), the paper's encoder alone.
    :param str site: the latent site's name.

    >>> from pyrovae.models.seq2seq import Seq2SeqVAE
    >>> guide = Seq2SeqGuide(vocab_size=20, z_dim=4, embed_dim=8, hidden_dim=8, encoder_dim=4)
    >>> b = Seq2SeqVAE(vocab_size=20).example_batch(3)
    >>> guide.encode(b["x"], b["mask"], b["source"], b["source_mask"]).batch_shape
    torch.Size([3])
    """

    model_name = "seq2seq-vae"

    @dataclass
    class Options(Seq2SeqOptions):
        vocab_size: int
        z_dim: int = 16
        embed_dim: int = 64
        hidden_dim: int = 128
        encoder_dim: int = 64
        read_target: bool = True
        site: str = "z"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.z_dim, self.site = o.z_dim, o.site
        self.source_encoder = SemanticEncoder(o.vocab_size, o.embed_dim, o.encoder_dim)
        width = self.source_encoder.out_dim
        if o.read_target:
            self.target_encoder = SentenceEncoder(o.vocab_size, o.embed_dim, o.hidden_dim)
            width += o.hidden_dim
        self.head = nn.Linear(width, 2 * o.z_dim)

    def encode(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, source: Optional[torch.Tensor] = None,
               source_mask: Optional[torch.Tensor] = None) -> dist.Distribution:
        """q(z | s, t): batch ``(N,)``, event ``(z_dim,)``."""
        features = self.source_encoder(source, source_mask_of(source, source_mask))
        if self.options.read_target:
            features = torch.cat([features, self.target_encoder(x, as_mask(x, mask))], -1)
        loc, raw = self.head(features).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                source: Optional[torch.Tensor] = None, source_mask: Optional[torch.Tensor] = None,
                source_lengths: Optional[torch.Tensor] = None):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x, mask, source, source_mask))
