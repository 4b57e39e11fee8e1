"""The RNN-based semantic VAE for sequence-to-sequence learning (RNN-SVAE; Jang, Seo, Kang
2018/2019), as a conditional latent-variable seq2seq model, and the same seq2seq network with
the latent removed.

A source sequence :math:`s = (s_1, \\dots, s_S)` is read by a bidirectional LSTM; Jang et al.'s
**semantic vector** is built from *all* its hidden states, not the last one only: the final
state :math:`h_S` (the forward LSTM's last state beside the backward LSTM's first) attends over
every state, and the attention-weighted sum (their *document information vector*) is joined to
it,

.. math::
    a_i = \\operatorname{softmax}_i(h_S^\\top h_i), \\qquad d = \\sum_{i \\le S} a_i h_i,
    \\qquad v(s) = [h_S;\\, d] \\in \\mathbb{R}^{4E}

(padding gets no weight). In the paper :math:`v` gives the mean and standard deviation of the
Gaussian semantic space and a draw of :math:`z` starts the decoder. Here the target
:math:`t = (w_1, \\dots, w_T)` (its last id ``<eos>``) is generated given the source:

.. math::
    z \\mid s &\\sim \\mathcal{N}(\\mu(v), \\operatorname{diag}\\sigma^2(v))
        \\quad\\text{(prior="conditional", default)}
        \\qquad\\text{or}\\qquad \\mathcal{N}(0, I) \\quad\\text{(prior="standard")}, \\\\
    c &= [v(s);\\, z], \\qquad (h_0, c_0) = \\tanh(W c + b), \\\\
    w_t \\mid w_{<t}, s, z &\\sim \\operatorname{Categorical}(\\operatorname{softmax}(V h_t + c')),
        \\quad h_t = \\operatorname{LSTM}(e(w_{t-1}), h_{t-1}),\\ w_0 = \\texttt{<bos>},

so :math:`\\log p(t \\mid s) = \\log \\int p(z \\mid s) \\prod_t p(w_t \\mid w_{<t}, s, z)\\, dz`,
estimated by importance sampling with the guide ``seq2seq`` (guides/seq2seq.py),
:math:`q(z \\mid s, t)`. The decoder is the sentence VAE's
:class:`~pyrovae.models.sentence.SentenceDecoder` with the code :math:`c` in place of its
:math:`z`; the target is one observed site ``x`` masked with ``mask`` and the source's padding
is excluded by ``source_mask`` (the LSTM reads real tokens only, masked attention), so padding of either never
enters the loss.

What differs from the paper, and why: Jang et al. evaluate on autoencoding tasks (language
modelling, missing-word imputation, paraphrase identification) where their :math:`q(z \\mid s)`
with the :math:`\\mathcal N(0, I)` prior is a sentence VAE. For a target that differs from the
source that pair bounds the *unconditional* :math:`\\log p(t)`, not :math:`\\log p(t \\mid s)`, so
here the paper's network :math:`s \\to v \\to (\\mu, \\sigma)` is the conditional prior
:math:`p(z \\mid s)` (the path used at test time, as in the paper), the guide adds the target
(a conditional VAE over the paper's encoder, Sohn et al. 2015), and the decoder also sees
:math:`v` so that the deterministic baseline is this network with :math:`z` removed. The
paper's self-attention variant of the semantic vector (the 2019 journal version) is not built;
its encoder is a GRU, this one an LSTM.

**The baseline** (:class:`Seq2Seq`) is the same encoder and decoder with :math:`z` removed:
:math:`c = v(s)` (the decoder's :math:`W` without its z columns). It has no latent; train it with
:func:`pyrovae.fit` and :func:`~pyrovae.models.sentence.no_latents`; :meth:`Seq2Seq.log_prob`
is its exact :math:`\\log p(t \\mid s)`.

References

[1] Jang, Seo, Kang. Recurrent Neural Network-Based Semantic Variational Autoencoder for
    Sequence-to-Sequence Learning. arXiv:1802.03238 (2018); Information Sciences 490 (2019).
[2] Bowman et al. Generating Sentences from a Continuous Space. CoNLL 2016.
[3] Sohn, Lee, Yan. Learning Structured Output Representation using Deep Conditional
    Generative Models. NeurIPS 2015.
"""

from __future__ import annotations

from dataclasses import dataclass
import typing
from typing import Literal, Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.models.sentence import (
    EOS_ID, PAD_ID, UNK_ID, SentenceDecoder, SentenceOptions, as_mask, decoder_inputs, init_output_at_token_frequencies,
    no_latents, word_dropout,
)
from pyrovae.models.vrnn import reverse_within_lengths
from pyrovae.nn import check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["Seq2SeqVAE", "Seq2Seq", "SemanticEncoder", "no_latents"]

Prior = Literal["conditional", "standard"]
PRIORS = typing.get_args(Prior)


def source_mask_of(source: torch.Tensor, source_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The source's mask as bool ``(N, S)``, checked (every step real when None)."""
    if source is None:
        raise ValueError("a seq2seq model needs the batch key 'source' (token ids (N, S)); "
                         "use a seq2seq data set such as 'ptb-continue' (pyrovae.data.seq2seq)")
    mask = as_mask(source, source_mask)
    if not bool(mask[:, 0].all()):
        raise ValueError("every source needs at least one real token (source_mask[:, 0] all True)")
    return mask


class SemanticEncoder(nn.Module):
    """Jang et al.'s semantic vector :math:`v(s) = [h_S; \\sum_i a_i h_i]`, ``(N, 4E)``: a
    bidirectional LSTM (``E`` a direction) over each source's real tokens, and dot-product
    attention of the final state over every real state."""

    def __init__(self, vocab_size: int, embed_dim: int, encoder_dim: int):
        super().__init__()
        self.out_dim = 4 * encoder_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, encoder_dim, batch_first=True, bidirectional=True)

    def states(self, source: torch.Tensor, mask: torch.Tensor):
        """(every state ``(N, S, 2E)``, zero on padding; the final state ``(N, 2E)``: the forward
        direction's last real state and the backward direction's state at step 1)."""
        lengths = mask.sum(1)
        steps = int(lengths.max())  # one host sync; later steps are padding in every row
        x, mask = self.embed(source[:, :steps]), mask[:, :steps]
        # padded, not packed (on a CPU a packed LSTM's backward zero-fills a gradient of all the
        # packed steps at every step): the forward direction runs over the rows as they are (it is
        # causal), the backward direction forward over each row reversed within its length, so it
        # starts at the row's last real token; the same states as the packed bidirectional LSTM
        forward, _ = self._direction(x, "")
        backward = reverse_within_lengths(self._direction(reverse_within_lengths(x, mask), "_reverse")[0], mask)
        out = torch.cat([forward, backward], -1).masked_fill(~mask.unsqueeze(-1), 0.0)
        final = torch.cat([forward[torch.arange(x.shape[0], device=x.device), lengths - 1], backward[:, 0]], -1)
        return F.pad(out, (0, 0, 0, source.shape[1] - steps)), final

    def _direction(self, x: torch.Tensor, suffix: str):
        """One direction of the bidirectional LSTM (its own weights, ``suffix`` "" or "_reverse")
        run forward over ``x`` ``(N, T, D)`` from zero states: ``(states (N, T, E), (h, c))``."""
        lstm = self.lstm
        params = [getattr(lstm, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
        out, h, c = torch.lstm(x, (zeros, zeros), params, True, 1, 0.0, self.training, False, True)
        return out, (h, c)

    def attention(self, states: torch.Tensor, final: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The weights :math:`a_i` ``(N, S)``, zero on padding."""
        scores = (states * final.unsqueeze(1)).sum(-1).masked_fill(~mask, -float("inf"))
        return torch.softmax(scores, -1)

    def forward(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states, final = self.states(source, mask)
        weights = self.attention(states, final, mask)
        return torch.cat([final, (weights.unsqueeze(-1) * states).sum(1)], -1)


class Seq2SeqOptions(SentenceOptions):
    """The checks shared by the seq2seq models' and guide's options (those of
    :class:`~pyrovae.models.sentence.SentenceOptions`, and a positive ``encoder_dim``)."""

    def __post_init__(self):
        super().__post_init__()
        check_positive(encoder_dim=self.encoder_dim)


def _code(v: torch.Tensor, z: Optional[torch.Tensor]) -> torch.Tensor:
    """``[v; z]`` with z's leading particle dimensions broadcast over v (or ``v`` without z)."""
    if z is None:
        return v
    lead = torch.broadcast_shapes(z.shape[:-1], v.shape[:-1])
    return torch.cat([v.expand(lead + v.shape[-1:]), z.expand(lead + z.shape[-1:])], -1)


class _Seq2SeqBase(Model):
    """What the VAE and its baseline share: the semantic encoder, the decoder's inputs."""

    replays_step = False  # the encoder reads the batch's longest sentence on the host (one sync)

    def _inputs(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        inputs = decoder_inputs(x)
        if self.training and self.options.word_dropout > 0:
            inputs = word_dropout(inputs, self.options.word_dropout, mask)
        return inputs

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the decoder's output at the training targets' unigram distribution (its bias at
        their tokens' log frequencies; ``init="burda"``)."""
        init_output_at_token_frequencies(self.decoder, x, mask)

    def semantic_vector(self, source: torch.Tensor, source_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:math:`v(s)` ``(N, 4 encoder_dim)``."""
        return self.encoder(source, source_mask_of(source, source_mask))

    def example_batch(self, n: int = 16, num_steps: int = 6, seed: int = 0) -> dict:
        """A small fixed batch: targets ``x`` ``(n, num_steps)`` ending in ``<eos>`` then ``<pad>``,
        ``mask``, ``lengths``, and sources ``source`` ``(n, num_steps + 1)``, ``source_mask``,
        ``source_lengths`` (1 to ``num_steps + 1`` tokens)."""
        g = torch.Generator().manual_seed(seed)
        out = {}
        for key, width, low in (("", num_steps, 2), ("source_", num_steps + 1, 1)):
            lengths = torch.randint(low, width + 1, (n,), generator=g)
            lengths[0] = width
            x = torch.randint(UNK_ID, self.options.vocab_size, (n, width), generator=g)
            if not key:
                x[torch.arange(n), lengths - 1] = EOS_ID
            mask = torch.arange(width) < lengths[:, None]
            out[key + "x" if not key else "source"] = torch.where(mask, x, torch.zeros_like(x))
            out[key + "mask"], out[key + "lengths"] = mask, lengths
        return out


@register_model("seq2seq-vae")
class Seq2SeqVAE(_Seq2SeqBase):
    """The RNN semantic VAE as a seq2seq model: p(z | s) from Jang et al.'s semantic vector (or
    N(0, I)), an LSTM decoder started from [v(s), z]. The batch: target ``x``, ``mask``,
    ``lengths``, and ``source``, ``source_mask`` (``source_lengths`` accepted, unused).

    :param int vocab_size: ids in the vocabulary (source and target share it).
    :param int z_dim: latent size.
    :param int embed_dim: word embedding size (encoder and decoder, separate tables).
    :param int hidden_dim: the decoder LSTM's state size.
    :param int encoder_dim: the encoder LSTM's state size per direction (v has 4 of them).
    :param str prior: ``"conditional"``: p(z | s) from v(s); ``"standard"``: N(0, I).
    :param float word_dropout: decoder inputs replaced by ``<unk>`` while training.
    :param bool code_every_step: also feed [v, z] beside every decoder input word.

    >>> model = Seq2SeqVAE(vocab_size=20, z_dim=4, embed_dim=8, hidden_dim=8, encoder_dim=4)
    >>> batch = model.example_batch(3)
    >>> model.generate(batch["source"], batch["source_mask"], max_length=5).shape[0]
    3
    """

    guide_name = "seq2seq"
    cannot_sample = ("a conditional text model: p(x | source) needs a source sentence "
                     "(model.generate(source, source_mask))")

    @dataclass
    class Options(Seq2SeqOptions):
        vocab_size: int
        z_dim: int = 16
        embed_dim: int = 64
        hidden_dim: int = 128
        encoder_dim: int = 64
        prior: Prior = "conditional"
        word_dropout: float = 0.0
        code_every_step: bool = False

        def __post_init__(self):
            super().__post_init__()
            if not 0 <= self.word_dropout <= 1:
                raise ValueError(f"word_dropout must be in [0, 1] (a probability), got {self.word_dropout}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.z_dim = o.z_dim
        self.encoder = SemanticEncoder(o.vocab_size, o.embed_dim, o.encoder_dim)
        if o.prior == "conditional":
            self.prior_head = nn.Linear(self.encoder.out_dim, 2 * o.z_dim)
        self.decoder = SentenceDecoder(o.vocab_size, o.embed_dim, o.hidden_dim, self.encoder.out_dim + o.z_dim,
                                       o.code_every_step)

    def prior_given(self, v: torch.Tensor) -> dist.Distribution:
        """p(z | s) from the semantic vector ``v`` ``(N, 4E)``: batch ``(N,)``, event ``(z_dim,)``."""
        if self.options.prior == "standard":
            return dist.Normal(v.new_zeros(v.shape[:-1] + (self.z_dim,)), 1.0).to_event(1)
        loc, raw = self.prior_head(v).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def prior(self, source: torch.Tensor, source_mask: Optional[torch.Tensor] = None) -> dist.Distribution:
        """p(z | s) for a batch of sources."""
        return self.prior_given(self.semantic_vector(source, source_mask))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                source: Optional[torch.Tensor] = None, source_mask: Optional[torch.Tensor] = None,
                source_lengths: Optional[torch.Tensor] = None):
        """The model of the targets ``x`` ``(N, T)`` given the sources ``source`` ``(N, S)``."""
        mask = as_mask(x, mask)
        v = self.semantic_vector(source, source_mask)
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"source has {v.shape[0]} rows and x (the targets) {x.shape[0]}: one source per target")
        inputs = self._inputs(x, mask)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior_given(v))
            pyro.sample("x", self.decoder.likelihood(inputs, mask, _code(v, z)), obs=x)

    @torch.no_grad()
    def generate(self, source: torch.Tensor, source_mask: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, max_length: int = 40, greedy: bool = False,
                 mean: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Targets ``(N, <= max_length)`` decoded for the sources: from ``z`` ``(N, Z)``, else from the
        prior's mean (``mean``) or a draw of p(z | s)."""
        v = self.semantic_vector(source, source_mask)
        if z is None:
            prior = self.prior_given(v)
            if mean:
                z = prior.mean
            else:
                eps = torch.randn(prior.mean.shape, generator=generator).to(v.device)
                z = prior.base_dist.loc + prior.base_dist.scale * eps
        return self.decoder.generate(_code(v, z), max_length=max_length, greedy=greedy, generator=generator)


class Seq2Seq(_Seq2SeqBase):
    """The deterministic seq2seq baseline: :class:`Seq2SeqVAE`'s network with z removed (the
    decoder started from v(s) alone). No latent site: train it with ``fit(model, no_latents, ...)``;
    :meth:`log_prob` is its exact log p(t | s).

    >>> net = Seq2Seq(vocab_size=20, embed_dim=8, hidden_dim=8, encoder_dim=4)
    >>> batch = net.example_batch(3)
    >>> net.log_prob(batch["x"], batch["mask"], batch["source"], batch["source_mask"]).shape
    torch.Size([3])
    """

    @dataclass
    class Options(Seq2SeqOptions):
        vocab_size: int
        embed_dim: int = 64
        hidden_dim: int = 128
        encoder_dim: int = 64
        word_dropout: float = 0.0
        code_every_step: bool = False
        z_dim: int = 1  # unused: keeps SentenceOptions' checks; the baseline has no z

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.encoder = SemanticEncoder(o.vocab_size, o.embed_dim, o.encoder_dim)
        self.decoder = SentenceDecoder(o.vocab_size, o.embed_dim, o.hidden_dim, self.encoder.out_dim,
                                       o.code_every_step)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                source: Optional[torch.Tensor] = None, source_mask: Optional[torch.Tensor] = None,
                source_lengths: Optional[torch.Tensor] = None):
        mask = as_mask(x, mask)
        v = self.semantic_vector(source, source_mask)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.decoder.likelihood(self._inputs(x, mask), mask, v), obs=x)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, mask: Optional[torch.Tensor], source: torch.Tensor,
                 source_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact :math:`\\log p(t \\mid s)` per target, ``(N,)`` (no word dropout)."""
        mask = as_mask(x, mask)
        v = self.semantic_vector(source, source_mask)
        return self.decoder.likelihood(decoder_inputs(x), mask, v).log_prob(x)

    @torch.no_grad()
    def generate(self, source: torch.Tensor, source_mask: Optional[torch.Tensor] = None, max_length: int = 40,
                 greedy: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        v = self.semantic_vector(source, source_mask)
        return self.decoder.generate(v, max_length=max_length, greedy=greedy, generator=generator)
