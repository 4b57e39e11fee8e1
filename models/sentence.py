"""The sentence VAE (Bowman et al. 2016) and its spherical variant (Xu & Durrett 2018), and the
LSTM language model with the same decoder and no latent.

A sentence :math:`x = (w_1, \\dots, w_T)` (token ids, the last one ``<eos>``) has one global
latent :math:`z`; an LSTM decoder whose initial state is computed from :math:`z` reads the
previous words and predicts the next (Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio):

.. math::
    z &\\sim \\mathcal{N}(0, I_{z\\_dim}) \\quad\\text{(sentence-vae)}
      \\qquad\\text{or}\\qquad z \\sim \\mathcal{U}(S^{z\\_dim-1}) \\quad\\text{(sentence-svae)}, \\\\
    (h_0, c_0) &= \\tanh(W z + b), \\\\
    h_t &= \\operatorname{LSTM}([e(w_{t-1}), z\\,\\mathbb{1}_{z\\_every\\_step}], h_{t-1}),
      \\qquad w_0 = \\texttt{<bos>}, \\\\
    w_t \\mid w_{<t}, z &\\sim \\operatorname{Categorical}(\\operatorname{softmax}(V h_t + c)),
      \\qquad t = 1..T,

so :math:`\\log p(x \\mid z) = \\sum_{t \\le T} \\log p(w_t \\mid w_{<t}, z)`. In Pyro the words are one
observed site ``x``: a Categorical over ``(N, T)`` ids masked with the batch's ``mask``
(``.mask(mask).to_event(1)``), so padding after a sentence's ``<eos>`` never enters the loss or
the log-weights. The guides (guides/sentence.py) read the sentence with an LSTM encoder.

**Word dropout** (Bowman et al., section 3.2): while training, each decoder *input* word is
replaced by ``<unk>`` with probability ``word_dropout`` (never ``<bos>`` and never padding);
the targets are untouched, so the decoder must lean on :math:`z` more. It is off in eval mode
(:func:`pyrovae.evaluation.log_likelihood` evaluates in eval mode), so the likelihood
evaluated is the model's, without dropout.

**The language model** (:class:`SentenceLM`) is the same decoder with :math:`z` removed: its
initial state is :math:`\\tanh(b)` (a learned vector), i.e. the VAE's decoder with :math:`W = 0`
(and no :math:`z` input when ``z_every_step``); :meth:`SentenceLM.log_prob` is its exact
:math:`\\log p(x)`. It is not a registered pair (it has no latent); train it with
:func:`pyrovae.fit` and the guide :func:`no_latents`.

KL annealing is the objective's ``warmup_steps`` (``--kl-warmup``, linear; Bowman et al. use a
logistic schedule, see benchmarks/sentence_ptb.py).

References

[1] Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio. Generating Sentences from a Continuous
    Space. CoNLL 2016. arXiv:1511.06349
[2] Xu, Durrett. Spherical Latent Spaces for Stable Variational Autoencoders. EMNLP 2018.
    arXiv:1808.10805
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints

from pyrovae.distributions import HypersphericalUniform
from pyrovae.nn import bias_at_token_frequencies_, check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["SentenceVAE", "SphericalSentenceVAE", "SentenceLM", "SentenceDecoder", "RealWords", "word_dropout", "no_latents",
           "init_output_at_token_frequencies",
           "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID"]

#: the fixed ids of the suite's vocabularies (pyrovae.data.sequences.SPECIALS)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def as_mask(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The batch's mask as bool ``(N, T)`` (every step real when None), checked against ``x``."""
    if x.dim() != 2:
        raise ValueError(f"a sentence model takes x of token ids with shape (N, T), got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape, dtype=torch.bool, device=x.device)
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be x's (N, T) = {tuple(x.shape)}")
    return mask.bool()


def decoder_inputs(x: torch.Tensor) -> torch.Tensor:
    """The decoder's input words: ``x`` shifted right with ``<bos>`` first, ``(N, T)``."""
    return torch.cat([x.new_full((x.shape[0], 1), BOS_ID), x[:, :-1]], 1)


def word_dropout(inputs: torch.Tensor, rate: float, mask: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``inputs`` (decoder input ids) with each real word replaced by ``<unk>`` with probability
    ``rate``; ``<bos>`` and padding (``mask`` False, or ``<pad>`` ids) are never replaced. A new
    tensor; ``inputs`` is not modified."""
    if not 0 <= rate <= 1:
        raise ValueError(f"word dropout rate must be in [0, 1], got {rate}")
    if rate == 0:
        return inputs
    droppable = (inputs != BOS_ID) & (inputs != PAD_ID)
    if mask is not None:
        droppable = droppable & mask
    drop = torch.rand(inputs.shape, generator=generator, device=inputs.device) < rate
    return torch.where(drop & droppable, torch.full_like(inputs, UNK_ID), inputs)


class RealWords(TorchDistribution):
    """Categorical words at the real steps of sentences, the vocabulary's softmax computed at
    those steps only: for the decoder's states :math:`h` at the real steps,

    .. math:: \\log p(x) = \\sum_{t\\ \\mathrm{real}} \\log \\operatorname{softmax}(V h_t + c)[x_t],

    the log-density of ``Categorical(logits=V h + c).mask(mask).to_event(1)`` without the
    logits of the padding (which that masked Categorical multiplies by zero). Batch shape
    ``lead``, event shape ``(T,)``; a draw has ``<pad>`` at the padding.

    :param torch.nn.Linear out: the output layer :math:`(V, c)`.
    :param torch.Tensor hidden: the states at the real steps, ``(L, H)``, row by row.
    :param torch.Tensor where: the ``(row, t)`` of each, ``(L, 2)``.
    :param tuple lead: the batch shape (its product the rows).
    :param int num_steps: T.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, out: nn.Linear, hidden: torch.Tensor, where: torch.Tensor, lead, num_steps: int):
        self.out, self.hidden, self.num_steps = out, hidden, num_steps
        self.rows, self.where = where[:, 0], where[:, 0] * num_steps + where[:, 1]  # (L,): row, flat index
        super().__init__(torch.Size(lead), torch.Size((num_steps,)), validate_args=False)

    def _rows(self) -> int:
        return self.batch_shape.numel()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        targets = value.expand(self.batch_shape + self.event_shape).reshape(-1)[self.where]  # (L,)
        per_word = -F.cross_entropy(self.out(self.hidden), targets, reduction="none")  # log softmax at the targets
        total = per_word.new_zeros(self._rows()).index_add_(0, self.rows, per_word)
        return total.view(self.batch_shape)

    def sample(self, sample_shape=torch.Size()):
        if sample_shape:
            raise NotImplementedError("RealWords draws one value per row (sample_shape must be empty)")
        with torch.no_grad():
            words = dist.Categorical(logits=self.out(self.hidden), validate_args=False).sample()
            flat = words.new_full((self._rows() * self.num_steps,), PAD_ID).index_copy_(0, self.where, words)
        return flat.view(self.batch_shape + self.event_shape)


class SentenceDecoder(nn.Module):
    """The LSTM decoder :math:`p(w_t \\mid w_{<t}, z)`, or with ``z_dim = 0`` the language model's
    :math:`p(w_t \\mid w_{<t})` (the same network, initial state from a learned bias instead of
    :math:`W z + b`)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, z_dim: int = 0, z_every_step: bool = False,
                 embed_dropout: float = 0.0):
        super().__init__()
        self.z_dim, self.hidden_dim, self.z_every_step = z_dim, hidden_dim, bool(z_every_step and z_dim)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.embed_dropout = nn.Dropout(embed_dropout)  # on the input words' embeddings, in training only
        self.lstm = nn.LSTM(embed_dim + (z_dim if self.z_every_step else 0), hidden_dim, batch_first=True)
        if z_dim:
            self.init = nn.Linear(z_dim, 2 * hidden_dim)
        else:
            self.init_bias = nn.Parameter(torch.zeros(2 * hidden_dim))
        self.out = nn.Linear(hidden_dim, vocab_size)

    def initial_state(self, z: Optional[torch.Tensor], n: int) -> tuple:
        """``(h_0, c_0)``, each ``(1, n, H)``: :math:`\\tanh(W z + b)`, or :math:`\\tanh(b)` without z."""
        pre = self.init(z) if z is not None else self.init_bias.expand(n, -1)
        h, c = torch.tanh(pre).split(self.hidden_dim, -1)
        return h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def _flat(self, inputs: torch.Tensor, z: Optional[torch.Tensor]) -> tuple:
        """``lead`` (z's leading dimensions broadcast with N, or ``(N,)``), the input ids
        ``(R, T)`` and z ``(R, Z)`` (or None) with the rows ``R = prod(lead)``."""
        if z is None:
            lead = inputs.shape[:1]
        else:
            lead = torch.broadcast_shapes(z.shape[:-1], inputs.shape[:1])
            z = z.expand(lead + z.shape[-1:]).reshape(-1, z.shape[-1])
        return lead, inputs.expand(lead + inputs.shape[1:]).reshape(-1, inputs.shape[-1]), z

    def _embed(self, flat: torch.Tensor, z: Optional[torch.Tensor]) -> torch.Tensor:
        emb = self.embed_dropout(self.embed(flat))
        if self.z_every_step:
            emb = torch.cat([emb, z.unsqueeze(1).expand(-1, emb.shape[1], -1)], -1)
        return emb

    def forward(self, inputs: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The next-word logits ``lead + (T, V)`` for input ids ``(N, T)`` and ``z`` ``lead + (Z,)``
        (``lead`` ends with N; leading particle dimensions broadcast), or ``(N, T, V)`` without z."""
        lead, flat, z = self._flat(inputs, z)
        h, _ = self.lstm(self._embed(flat, z), self.initial_state(z, flat.shape[0]))
        return self.out(h).reshape(lead + inputs.shape[1:] + (-1,))

    def likelihood(self, inputs: torch.Tensor, mask: torch.Tensor, z: Optional[torch.Tensor] = None):
        """The masked Categorical over the words: batch ``lead``, event ``(T,)``
        (:class:`RealWords`: the LSTM runs up to the last real step of the batch, and the
        vocabulary's softmax is computed at the real steps alone)."""
        lead, flat, z = self._flat(inputs, z)
        rows = mask.expand(lead + mask.shape[-1:]).reshape(flat.shape)  # (R, T)
        steps = int(rows.any(0).nonzero().max()) + 1 if rows.any() else 1  # the decoder is causal: later
        # steps (padding in every row) change nothing; one host sync. The LSTM runs padded, not packed:
        # on a CPU a packed LSTM's backward zero-fills a gradient of all the packed steps at every step.
        h, _ = self.lstm(self._embed(flat[:, :steps], z), self.initial_state(z, flat.shape[0]))  # (R, steps, H)
        real = rows[:, :steps]
        return RealWords(self.out, h[real], real.nonzero(), lead, rows.shape[1])

    @torch.no_grad()
    def generate(self, z: Optional[torch.Tensor] = None, num_samples: Optional[int] = None, max_length: int = 40,
                 greedy: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sentences ``(M, max_length)`` decoded word by word (``<pad>`` after each ``<eos>``),
        from ``z`` ``(M, Z)`` or, without z, ``num_samples`` of them; ``greedy``: the most
        probable word at each step (else a draw)."""
        n = z.shape[0] if z is not None else num_samples
        device = self.out.weight.device
        state = self.initial_state(z, n)
        word = torch.full((n, 1), BOS_ID, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        words = []
        for _ in range(max_length):
            emb = self.embed(word)
            if self.z_every_step:
                emb = torch.cat([emb, z.unsqueeze(1)], -1)
            h, state = self.lstm(emb, state)
            logits = self.out(h[:, -1])
            logits[:, [PAD_ID, BOS_ID]] = -float("inf")
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
            words.append(nxt)
            done = done | (nxt == EOS_ID)
            word = nxt.unsqueeze(1)
            if bool(done.all()):
                break
        return torch.stack(words, 1)


def init_output_at_token_frequencies(decoder: SentenceDecoder, x: torch.Tensor, mask: Optional[torch.Tensor]) -> None:
    """A :class:`SentenceDecoder`'s output bias at the log frequencies of the real tokens of
    ``x`` ``(N, T)`` (``mask``, or every id but ``<pad>`` without one): the ``init_from_data`` of
    the sequence models."""
    real = as_mask(x, mask) & (x != PAD_ID)
    bias_at_token_frequencies_(decoder.out, x[real])


class SentenceOptions:
    """The checks shared by the sentence models' and guides' ``Options`` (a base of each):
    positive sizes, and a vocabulary above the four fixed ids."""

    def __post_init__(self):
        check_positive(vocab_size=self.vocab_size, z_dim=self.z_dim, embed_dim=self.embed_dim,
                       hidden_dim=self.hidden_dim)
        if self.vocab_size <= UNK_ID:
            raise ValueError(f"vocab_size must be above {UNK_ID} (ids 0-3 are <pad>, <bos>, <eos>, <unk>), "
                             f"got {self.vocab_size}")


@register_model("sentence-vae")
class SentenceVAE(Model):
    """Bowman et al.'s sentence VAE: a Gaussian z, an LSTM decoder started from z, word dropout.

    :param int vocab_size: ids in the vocabulary (from the data set: 10,002 for ``ptb``).
    :param int z_dim: latent size.
    :param int embed_dim: word embedding size.
    :param int hidden_dim: LSTM state size.
    :param float word_dropout: the probability that a decoder input word becomes ``<unk>``
        while training (0: none; Bowman et al. tried 0.25 to 1).
    :param bool z_every_step: also feed z to the decoder at every step (Bowman et al. only
        start the decoder from z).
    :param float embed_dropout: dropout on the decoder's input word embeddings while training
        (each coordinate zeroed with this probability; 0: none).

    >>> model = SentenceVAE(vocab_size=20, z_dim=4, embed_dim=8, hidden_dim=8)
    >>> model.generate(num_samples=3, max_length=6).shape[0]
    3
    """

    guide_name = "sentence"
    cannot_sample = 'a text model: draw sentences with model.generate(num_samples=N)'

    @dataclass
    class Options(SentenceOptions):
        vocab_size: int
        z_dim: int = 32
        embed_dim: int = 128
        hidden_dim: int = 256
        word_dropout: float = 0.0
        z_every_step: bool = False
        embed_dropout: float = 0.0

        def __post_init__(self):
            super().__post_init__()
            if not 0 <= self.word_dropout <= 1:
                raise ValueError(f"word_dropout must be in [0, 1] (a probability), got {self.word_dropout}")
            if not 0 <= self.embed_dropout < 1:
                raise ValueError(f"embed_dropout must be in [0, 1) (a probability), got {self.embed_dropout}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.z_dim, self.vocab_size = o.z_dim, o.vocab_size
        self.decoder = SentenceDecoder(o.vocab_size, o.embed_dim, o.hidden_dim, o.z_dim, o.z_every_step,
                                       o.embed_dropout)

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the decoder's output at the training tokens' unigram distribution: its bias at
        their log frequencies (``init="burda"``; :func:`pyrovae.nn.bias_at_token_frequencies_`)."""
        init_output_at_token_frequencies(self.decoder, x, mask)

    def prior(self, n: int) -> dist.Distribution:
        """p(z) for ``n`` sentences: a standard Normal, batch ``(n,)``."""
        return dist.Normal(self.decoder.out.weight.new_zeros(n, self.z_dim), 1.0).to_event(1)

    def inputs(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's input words, with word dropout while training."""
        inputs = decoder_inputs(x)
        if self.training and self.options.word_dropout > 0:
            inputs = word_dropout(inputs, self.options.word_dropout, mask)
        return inputs

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        """The model of the sentences ``x`` ``(N, T)`` (ids) with ``mask`` ``(N, T)`` (``lengths``
        is accepted and unused: the mask carries it)."""
        mask = as_mask(x, mask)
        inputs = self.inputs(x, mask)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0]))
            pyro.sample("x", self.decoder.likelihood(inputs, mask, z), obs=x)

    def example_batch(self, n: int = 16, num_steps: int = 6, seed: int = 0) -> dict:
        """A small fixed batch: ``{"x": (n, num_steps)`` ids ending in ``<eos>`` then ``<pad>``,
        ``"mask"``, ``"lengths"}``, lengths from 2 to ``num_steps`` (the contract tests')."""
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(2, num_steps + 1, (n,), generator=g)
        lengths[0] = num_steps
        x = torch.randint(UNK_ID, self.vocab_size, (n, num_steps), generator=g)
        x[torch.arange(n), lengths - 1] = EOS_ID
        mask = torch.arange(num_steps) < lengths[:, None]
        return {"x": torch.where(mask, x, torch.zeros_like(x)), "mask": mask, "lengths": lengths}

    def generate(self, z: Optional[torch.Tensor] = None, num_samples: int = 1, max_length: int = 40,
                 greedy: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sentences ``(M, <= max_length)`` (ids, ``<pad>`` after ``<eos>``) decoded from ``z``, or
        from ``num_samples`` draws of the prior."""
        if z is None:
            z = self.prior(num_samples).sample() if generator is None else self._prior_draw(num_samples, generator)
        return self.decoder.generate(z, max_length=max_length, greedy=greedy, generator=generator)

    def _prior_draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(self.decoder.out.weight.device)

    @staticmethod
    def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` points from ``z0`` to ``z1`` (both ends included), on the line."""
        t = torch.linspace(0, 1, steps, device=z0.device)[:, None]
        return (1 - t) * z0 + t * z1


@register_model("sentence-svae")
class SphericalSentenceVAE(SentenceVAE):
    """Xu & Durrett's spherical sentence VAE: z uniform on the sphere, the same LSTM decoder.

    The options of :class:`SentenceVAE`; ``z_dim`` is z's ambient dimension (z lies on
    S^(z_dim-1), so z_dim >= 2). Pairs with the vMF guide ``sentence-vmf`` (fixed concentration
    by default: a constant KL, so no posterior collapse).
    """

    guide_name = "sentence-vmf"

    @dataclass
    class Options(SentenceVAE.Options):
        def __post_init__(self):
            super().__post_init__()
            if self.z_dim < 2:
                raise ValueError(f"the spherical sentence VAE needs z_dim >= 2 (z lies on S^(z_dim-1)), got {self.z_dim}")

    def prior(self, n: int) -> dist.Distribution:
        """p(z): uniform on :math:`S^{z\\_dim-1}`, batch ``(n,)``."""
        ref = self.decoder.out.weight
        return HypersphericalUniform(self.z_dim, (n,), device=ref.device, dtype=ref.dtype)

    def _prior_draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.nn.functional.normalize(super()._prior_draw(n, generator), dim=-1)

    @staticmethod
    def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` points from ``z0`` to ``z1`` on the great circle (slerp), both ends included."""
        z0, z1 = torch.nn.functional.normalize(z0, dim=-1), torch.nn.functional.normalize(z1, dim=-1)
        omega = torch.arccos((z0 * z1).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6))
        t = torch.linspace(0, 1, steps, device=z0.device)[:, None]
        return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


class SentenceLM(Model):
    """The LSTM language model: :class:`SentenceVAE`'s decoder with z removed (a learned
    initial state). No latent site: train it with ``fit(lm, no_latents, ...)``; its
    :meth:`log_prob` is the exact log-likelihood of each sentence.

    >>> lm = SentenceLM(vocab_size=20, embed_dim=8, hidden_dim=8)
    >>> lm.log_prob(torch.tensor([[5, 6, 2]])).shape
    torch.Size([1])
    """

    @dataclass
    class Options:
        vocab_size: int
        embed_dim: int = 128
        hidden_dim: int = 256
        word_dropout: float = 0.0

        def __post_init__(self):
            check_positive(vocab_size=self.vocab_size, embed_dim=self.embed_dim, hidden_dim=self.hidden_dim)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.decoder = SentenceDecoder(o.vocab_size, o.embed_dim, o.hidden_dim, z_dim=0)

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """The output bias at the training tokens' log frequencies (as :class:`SentenceVAE`)."""
        init_output_at_token_frequencies(self.decoder, x, mask)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
        mask = as_mask(x, mask)
        inputs = decoder_inputs(x)
        if self.training and self.options.word_dropout > 0:
            inputs = word_dropout(inputs, self.options.word_dropout, mask)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.decoder.likelihood(inputs, mask), obs=x)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact :math:`\\log p(x)` per sentence, ``(N,)`` (no word dropout)."""
        mask = as_mask(x, mask)
        return self.decoder.likelihood(decoder_inputs(x), mask).log_prob(x)

    def generate(self, num_samples: int = 1, max_length: int = 40, greedy: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.decoder.generate(num_samples=num_samples, max_length=max_length, greedy=greedy,
                                     generator=generator)


def no_latents(x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None):
    """The guide of a model without latents (:class:`SentenceLM`): the ELBO is then log p(x)."""
