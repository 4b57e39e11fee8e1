"""Semi-supervised text classification with a VAE (Xu, Sun, Deng, Tan 2017, SSVAE).

Kingma et al.'s M2 (models/m2.py) with a text's LSTMs: the label ``y`` of a text
:math:`x = (w_1, \\dots, w_T)` is a discrete latent beside the continuous ``z``, and an LSTM
decoder conditioned on both generates the words:

.. math::
    y_n &\\sim \\operatorname{Cat}(1/C), \\qquad z_n \\sim \\mathcal{N}(0, I), \\\\
    c_n &= [z_n, \\operatorname{onehot}(y_n)], \\qquad (h_0, c_0) = \\tanh(W c_n + b), \\\\
    h_t &= \\operatorname{LSTM}([e(w_{t-1}), c_n\\,\\mathbb{1}_{code\\_every\\_step}], h_{t-1}),
      \\qquad w_0 = \\texttt{<bos>}, \\\\
    w_t \\mid w_{<t}, y_n, z_n &\\sim \\operatorname{Categorical}(\\operatorname{softmax}(V h_t + c)),

the decoder being the sentence VAE's :class:`~pyrovae.models.sentence.SentenceDecoder` with the
code :math:`c_n` in place of its ``z`` (fed to every step by default: Xu et al.'s conditional
LSTM feeds the label at every step). The words are one observed site ``x``, masked by the
batch's ``mask``, so padding never enters the loss. The guide (guides/ssvae_text.py) is an LSTM
classifier :math:`q(y \\mid x)` and :math:`q(z \\mid x, y)` reading the same LSTM state.

Under the ``enum`` objective (pyrovae/infer/enum.py) the label of an unlabelled text is summed
out exactly over the C classes (Kingma et al.'s eq. 7; Xu et al. sample it with a baseline
instead, to save the C decoder passes), a labelled text has the single term of its label
(eq. 6: the guide's point mass), and ``alpha`` times :math:`\\log q(y \\mid x)` of the
labelled texts trains the classifier directly (eq. 9). Batches are as for M2: ``y`` (-1 where
hidden) and ``labelled``, beside the text's ``x``, ``mask``, ``lengths``.
:func:`semi_supervised_text` makes such a data set from ``debian-descriptions``; the names
``debian-140labels`` and ``debian-1400labels`` (10 and 100 labels per class; ``-seed1``,
``-seed2`` for the other draws) are registered for ``--data``.

References

[1] Xu, Sun, Deng, Tan. Variational Autoencoder for Semi-Supervised Text Classification.
    AAAI 2017. arXiv:1609.00081
[2] Kingma, Rezende, Mohamed, Welling. Semi-Supervised Learning with Deep Generative Models.
    NeurIPS 2014. arXiv:1406.5298
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch

from pyrovae.data.datasets import register_dataset
from pyrovae.data.semisupervised import UNKNOWN, balanced_labels
from pyrovae.data.sequences import SequenceDataSet, load_debian_descriptions
from pyrovae.models.base import broadcast_cat
from pyrovae.models.m2 import one_hot
from pyrovae.models.sentence import (EOS_ID, UNK_ID, SentenceDecoder, as_mask, decoder_inputs,
                                     init_output_at_token_frequencies, word_dropout)
from pyrovae.nn import check_positive
from pyrovae.models.base import Model
from pyrovae.registry import register_model

__all__ = ["SSVAEText", "semi_supervised_text", "DEBIAN_VOCAB", "DEBIAN_MAX_LENGTH"]

#: the capped vocabulary and length of the registered debian-*labels sets (CPU budget)
DEBIAN_VOCAB, DEBIAN_MAX_LENGTH = 2000, 64


@register_model("ssvae-text")
class SSVAEText(Model):
    """p(y) p(z) p(x | y, z) with an LSTM decoder: M2 for texts (Xu et al.'s SSVAE).

    :param int vocab_size: ids in the vocabulary (from the data set).
    :param int num_classes: labels C (filled from the data: 14 for debian).
    :param int z_dim: latent size.
    :param int embed_dim: word embedding size.
    :param int hidden_dim: LSTM state size.
    :param float word_dropout: probability that a decoder input word becomes ``<unk>`` while
        training (Bowman et al.'s; 0: none).
    :param bool code_every_step: feed ``[z, onehot(y)]`` to the decoder at every step as well
        as through its initial state.

    >>> model = SSVAEText(vocab_size=20, num_classes=3, z_dim=2, embed_dim=4, hidden_dim=4)
    >>> model.likelihood(torch.tensor([[5, 6, 2]]), None, torch.zeros(1, 2), torch.tensor([1])).batch_shape
    torch.Size([1])
    """

    guide_name = "ssvae-text"
    cannot_sample = 'a text model: draw sentences of the classes y with model.generate(y)'

    @dataclass
    class Options:
        vocab_size: int
        num_classes: int = 14
        z_dim: int = 16
        embed_dim: int = 64
        hidden_dim: int = 128
        word_dropout: float = 0.0
        code_every_step: bool = True

        def __post_init__(self):
            check_positive(vocab_size=self.vocab_size, num_classes=self.num_classes, z_dim=self.z_dim,
                           embed_dim=self.embed_dim, hidden_dim=self.hidden_dim)
            if self.vocab_size <= UNK_ID:
                raise ValueError(f"vocab_size must be above {UNK_ID} (ids 0-3 are <pad>, <bos>, <eos>, <unk>), "
                                 f"got {self.vocab_size}")
            if not 0 <= self.word_dropout <= 1:
                raise ValueError(f"word_dropout must be in [0, 1] (a probability), got {self.word_dropout}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.vocab_size, self.num_classes, self.z_dim = o.vocab_size, o.num_classes, o.z_dim
        self.decoder = SentenceDecoder(o.vocab_size, o.embed_dim, o.hidden_dim, o.z_dim + o.num_classes,
                                       o.code_every_step)

    def init_from_data(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, **unused) -> None:
        """Start the decoder's output at the training texts' unigram distribution (its bias at
        their tokens' log frequencies; ``init="burda"``)."""
        init_output_at_token_frequencies(self.decoder, x, mask)

    def code(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[z, onehot(y)]``, leading dimensions broadcast (an enumerated ``(C, 1)`` y beside
        ``(C, N, Z)`` or ``(N, Z)`` z)."""
        return broadcast_cat(z, one_hot(y, self.num_classes, z.dtype))

    def likelihood(self, x: torch.Tensor, mask: Optional[torch.Tensor], z: torch.Tensor, y: torch.Tensor,
                   inputs: Optional[torch.Tensor] = None) -> dist.Distribution:
        """p(x | y, z): the masked Categorical over the words, batch the broadcast of z's and y's
        leading shapes with ``(N,)``, event ``(T,)``; ``inputs`` the decoder's input words
        (default: ``x`` shifted right, no word dropout)."""
        mask = as_mask(x, mask)
        inputs = decoder_inputs(x) if inputs is None else inputs
        return self.decoder.likelihood(inputs, mask, self.code(z, y))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                y: Optional[torch.Tensor] = None, labelled: Optional[torch.Tensor] = None):
        """The model of the texts ``x`` ``(N, T)`` with ``mask``: y and z latent, the words
        observed. ``lengths``, ``y`` and ``labelled`` are accepted and not read (the mask carries
        the lengths; the guide's point mass observes a known label, as in M2)."""
        mask = as_mask(x, mask)
        inputs = decoder_inputs(x)
        if self.training and self.options.word_dropout > 0:
            inputs = word_dropout(inputs, self.options.word_dropout, mask)
        ref = self.decoder.out.weight
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=ref.new_zeros(self.num_classes)))
            z = pyro.sample("z", dist.Normal(ref.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(x, mask, z, y, inputs), obs=x)

    def example_batch(self, n: int = 16, num_steps: int = 6, seed: int = 0) -> dict:
        """A small semi-supervised batch of texts for the contract tests: ids ending in ``<eos>``
        then ``<pad>``, ``mask``, ``lengths``, ``y`` (-1 where hidden) and ``labelled`` (every
        other row)."""
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(2, num_steps + 1, (n,), generator=g)
        lengths[0] = num_steps
        x = torch.randint(UNK_ID, self.vocab_size, (n, num_steps), generator=g)
        x[torch.arange(n), lengths - 1] = EOS_ID
        mask = torch.arange(num_steps) < lengths[:, None]
        labelled = torch.arange(n) % 2 == 0
        y = torch.randint(self.num_classes, (n,), generator=g)
        return {"x": torch.where(mask, x, torch.zeros_like(x)), "mask": mask, "lengths": lengths,
                "y": torch.where(labelled, y, torch.full_like(y, UNKNOWN)), "labelled": labelled}

    @torch.no_grad()
    def generate(self, y: torch.Tensor, z: Optional[torch.Tensor] = None, max_length: int = 40,
                 greedy: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Texts ``(N, <= max_length)`` of the classes ``y`` ``(N,)`` (ids, ``<pad>`` after
        ``<eos>``), with ``z`` ``(N, z_dim)`` or draws of the prior."""
        ref = self.decoder.out.weight
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < self.num_classes):
            raise ValueError(f"the classes y must lie in [0, {self.num_classes}), got {y.min()}..{y.max()}")
        if z is None:
            z = torch.randn(len(y), self.z_dim, generator=generator).to(ref.device)
        return self.decoder.generate(self.code(z, y.to(ref.device)), max_length=max_length, greedy=greedy,
                                     generator=generator)


def _with_labels(split: dict, labelled: bool) -> dict:
    return {**split, "labelled": torch.full((len(split["x"]),), labelled, dtype=torch.bool)}


def semi_supervised_text(base: SequenceDataSet, labels_per_class: int, seed: int = 0,
                         unlabelled: Optional[int] = None, extra_pool: int = 0, repeats: Optional[int] = None,
                         name: Optional[str] = None) -> SequenceDataSet:
    """A text data set with ``labels_per_class`` labels of each class kept (drawn by ``seed``) and
    every other training text unlabelled, as M2's (pyrovae/data/semisupervised.py) but keeping
    ``mask`` and ``lengths`` (a :class:`SequenceDataSet`, so ``bucketed`` works).

    The train split is the unlabelled pool (the other labelled-train texts with ``y`` = -1, or
    ``unlabelled`` of them in a seeded order, then the first ``extra_pool`` texts of
    ``base.unlabelled`` in a seeded order) followed by the labelled texts repeated ``repeats``
    times (default ``max(1, round(0.1 N / N_l))``, a tenth of an epoch). ``valid`` and ``test``
    keep their labels and are all unlabelled. The kept rows' indices into ``base.train`` are
    ``dataset.names["labelled_rows"]``, the draw ``dataset.names["label_seed"]``.
    """
    if base.train.get("y") is None or base.num_classes is None:
        raise ValueError(f"data set {base.name!r} has no labels: semi_supervised_text needs a labelled text set")
    if labels_per_class < 1:
        raise ValueError(f"labels_per_class must be >= 1, got {labels_per_class}")
    train, width = base.train, base.train["x"].shape[1]
    keep = balanced_labels(train["y"], labels_per_class * base.num_classes, seed)
    rest = torch.ones(len(train["y"]), dtype=torch.bool)
    rest[keep] = False
    rest = rest.nonzero().squeeze(-1)
    if unlabelled is not None:
        if not 0 <= unlabelled <= len(rest):
            raise ValueError(f"unlabelled must be in 0..{len(rest)} (the texts left after the labels), got {unlabelled}")
        g = torch.Generator().manual_seed(10_000 + seed)
        rest = rest[torch.randperm(len(rest), generator=g)[:unlabelled]].sort().values
    parts = [{k: train[k][rest] for k in ("x", "mask", "lengths")}]
    if extra_pool:
        pool = base.unlabelled
        if pool is None or not 0 < extra_pool <= len(pool["x"]):
            size = 0 if pool is None else len(pool["x"])
            raise ValueError(f"extra_pool must be in 0..{size} (the texts of {base.name}.unlabelled), got {extra_pool}")
        g = torch.Generator().manual_seed(20_000 + seed)
        take = torch.randperm(len(pool["x"]), generator=g)[:extra_pool].sort().values
        parts.append({k: pool[k][take] for k in ("x", "mask", "lengths")})
    num_pool = sum(len(p["x"]) for p in parts)
    num_labels = len(keep)
    if repeats is None:
        repeats = max(1, round(0.1 * (num_pool + num_labels) / num_labels))
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    kept = keep.repeat(repeats)
    parts.append({k: train[k][kept] for k in ("x", "mask", "lengths")})

    def pad(t):  # the extra pool is padded to its own width: bring it to train's (cut or zero-padded)
        out = t.new_zeros((t.shape[0], width))
        out[:, :min(width, t.shape[1])] = t[:, :width]
        return out

    stream = {k: torch.cat([pad(p[k]) if k != "lengths" else p[k].clamp(max=width) for p in parts]) for k in ("x", "mask", "lengths")}
    stream["y"] = torch.cat([torch.full((num_pool,), UNKNOWN, dtype=torch.int64), train["y"][kept]])
    stream["labelled"] = torch.cat([torch.zeros(num_pool, dtype=torch.bool), torch.ones(len(kept), dtype=torch.bool)])
    names = {"labelled_rows": keep.tolist(), "label_seed": seed, "repeats": repeats, "num_unlabelled": num_pool}
    name = name or f"{base.name}-{num_labels}labels" + (f"-seed{seed}" if seed else "")
    return dataclasses.replace(base, name=name, train=stream, valid=_with_labels(base.valid, False),
                               test=_with_labels(base.test, False), unlabelled=None, names=names)


def _register_debian(labels_per_class: int, seed: int) -> None:
    name = f"debian-{14 * labels_per_class}labels" + (f"-seed{seed}" if seed else "")

    def loader(data_dir, binarize, valid_size):
        base = load_debian_descriptions(data_dir, vocab_size=DEBIAN_VOCAB, max_length=DEBIAN_MAX_LENGTH,
                                        unlabelled=False)
        return semi_supervised_text(base, labels_per_class, seed, name=name)

    loader.__doc__ = (f"debian-descriptions with {labels_per_class} labels per class kept (draw {seed}), the other "
                      f"train texts unlabelled; vocabulary {DEBIAN_VOCAB}, texts cut at {DEBIAN_MAX_LENGTH} tokens")
    register_dataset(name)(loader)


for _per_class in (10, 100):
    for _seed in (0, 1, 2):
        _register_debian(_per_class, _seed)
