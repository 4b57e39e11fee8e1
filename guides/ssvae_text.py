"""The guide of the semi-supervised text VAE (models/ssvae_text.py; Xu et al. 2017's SSVAE):

.. math:: q_\\phi(y, z \\mid x) = \\operatorname{Cat}\\big(y;\\ \\operatorname{softmax}(A h_T + a)\\big)\\;
          \\mathcal{N}\\big(z;\\ \\mu(h_T, y), \\operatorname{diag}\\sigma^2(h_T, y)\\big),

:math:`h_T` the last real state of an LSTM over the text (the sentence VAE's
:class:`~pyrovae.guides.sentence.SentenceEncoder`, its state at the last real word, so padding is never read),
read by the Gaussian head with :math:`\\operatorname{onehot}(y)`; the classifier has its own
LSTM of the same form (Xu et al.'s sequential classifier), or, with ``share_encoder``, reads the
same :math:`h_T`. The classifier :meth:`SSVAETextGuide.classify` is that LSTM and a
softmax layer, the network the benchmark's supervised baseline trains alone.

Labels travel as in M2 (guides/m2.py): on a ``labelled`` row ``q(y)`` is the point mass on the
known ``y`` (logit 0 there, -1e4 elsewhere), so the enumerated sum of the ``enum`` objective is
the single term of that label; elsewhere it is the classifier and the sum runs over the C
classes. ``y`` is marked ``infer={"enumerate": "parallel"}``.

The ``enum`` objective's classifier term calls ``classify(x, mask=batch["mask"])``; called with
``x`` alone, ``classify`` reads the padding from the ids (``<pad>`` = 0 is never a real word),
which is the mask of every batch of the suite's text data sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.guides.m2 import PINNED_LOGIT
from pyrovae.guides.sentence import SentenceEncoder
from pyrovae.models.base import broadcast_cat
from pyrovae.models.m2 import one_hot
from pyrovae.models.sentence import PAD_ID, as_mask
from pyrovae.nn import check_positive
from pyrovae.guides.base import Guide
from pyrovae.registry import register_guide

__all__ = ["SSVAETextGuide", "pinned_logits", "accuracy_and_macro_f1"]


def pinned_logits(logits: torch.Tensor, y: Optional[torch.Tensor], labelled: Optional[torch.Tensor]) -> torch.Tensor:
    """The logits of the guide's q(y): ``logits`` where unlabelled, the point mass on ``y`` where
    ``labelled`` (M2's rule)."""
    if labelled is None:
        return logits
    if y is None:
        raise ValueError("a batch with a 'labelled' mask needs the labels 'y' too (-1 where unknown)")
    labelled = labelled.bool()
    known = torch.where(labelled, y.long(), torch.zeros_like(y, dtype=torch.long))
    pinned = torch.full_like(logits, PINNED_LOGIT).scatter(-1, known.unsqueeze(-1), 0.0)
    return torch.where(labelled.unsqueeze(-1), pinned, logits)


def accuracy_and_macro_f1(predicted: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple:
    """``(accuracy, macro-F1)`` of integer predictions against labels, both in [0, 1]; a class
    with no prediction and no label is left out of the macro average, one with either gets F1 0
    when none is right."""
    predicted, y = predicted.long().cpu(), y.long().cpu()
    accuracy = float((predicted == y).float().mean())
    scores = []
    for c in range(num_classes):
        tp = int(((predicted == c) & (y == c)).sum())
        fp = int(((predicted == c) & (y != c)).sum())
        fn = int(((predicted != c) & (y == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return accuracy, sum(scores) / len(scores)


@register_guide("ssvae-text")
class SSVAETextGuide(Guide):
    """q(y | x) q(z | x, y) with one LSTM encoder: the text classifier and the Gaussian encoder.

    :param int vocab_size: ids in the vocabulary (from the data set).
    :param int num_classes: labels C (from the data).
    :param int z_dim: latent size (the model's).
    :param int embed_dim: word embedding size.
    :param int hidden_dim: LSTM state size.
    :param str site: the continuous latent's name.
    :param bool share_encoder: one LSTM for the classifier and q(z | x, y) (cheaper; the
        reconstruction's gradient then shapes the classifier's features); False (default): the
        classifier has its own LSTM, as Xu et al.'s sequential classifier does.

    >>> guide = SSVAETextGuide(vocab_size=20, num_classes=3, z_dim=2, embed_dim=4, hidden_dim=4)
    >>> guide.classify(torch.tensor([[5, 6, 2], [7, 2, 0]])).shape
    torch.Size([2, 3])
    """

    replays_step = False  # the encoder reads the batch's longest text on the host (one sync)

    model_name = "ssvae-text"
    objective_name = "enum"
    #: y is discrete: IWAE (which needs a reparameterized guide) does not apply; log_likelihood does
    has_density = False

    @dataclass
    class Options:
        vocab_size: int
        num_classes: int = 14
        z_dim: int = 16
        embed_dim: int = 64
        hidden_dim: int = 128
        site: str = "z"
        share_encoder: bool = False

        def __post_init__(self):
            check_positive(vocab_size=self.vocab_size, num_classes=self.num_classes, z_dim=self.z_dim,
                           embed_dim=self.embed_dim, hidden_dim=self.hidden_dim)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.num_classes, self.z_dim, self.site = o.num_classes, o.z_dim, o.site
        self.encoder = SentenceEncoder(o.vocab_size, o.embed_dim, o.hidden_dim)
        # shared: no second attribute for the same LSTM (Pyro would register its parameters twice)
        self.classifier_encoder = None if o.share_encoder else SentenceEncoder(o.vocab_size, o.embed_dim, o.hidden_dim)
        self.classifier = nn.Linear(o.hidden_dim, o.num_classes)
        self.head = nn.Linear(o.hidden_dim + o.num_classes, 2 * o.z_dim)

    @staticmethod
    def _mask(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return as_mask(x, mask if mask is not None else x != PAD_ID)

    def classify(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The logits of q(y | x), ``(N, num_classes)`` (``mask`` None: padding read from the
        ``<pad>`` ids)."""
        return self.classifier(self.classifier_lstm()(x, self._mask(x, mask)))

    def classifier_lstm(self) -> SentenceEncoder:
        """The LSTM of q(y | x): its own, or the shared ``encoder``."""
        return self.encoder if self.classifier_encoder is None else self.classifier_encoder

    def classifier_parameters(self) -> list:
        """The parameters of q(y | x) alone (its LSTM and softmax layer): what a supervised baseline trains."""
        return list(self.classifier_lstm().parameters()) + list(self.classifier.parameters())

    def encode(self, h: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """q(z | x, y) from the LSTM state ``h`` ``(N, H)``: batch the broadcast of ``(N,)`` and ``y``'s shape."""
        loc, raw = self.head(broadcast_cat(h, one_hot(y, self.num_classes, h.dtype))).split(self.z_dim, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                y: Optional[torch.Tensor] = None, labelled: Optional[torch.Tensor] = None):
        mask = self._mask(x, mask)
        h = self.encoder(x, mask)
        logits = self.classifier(h if self.classifier_encoder is None else self.classifier_encoder(x, mask))
        with pyro.plate("data", x.shape[0]):
            label = pyro.sample("y", dist.Categorical(logits=pinned_logits(logits, y, labelled)),
                                infer={"enumerate": "parallel"})
            return pyro.sample(self.site, self.encode(h, label))

    @torch.no_grad()
    def predict(self, data: dict, batch_size: int = 500) -> torch.Tensor:
        """The most probable class of each text of ``data`` (``{"x", "mask"}``), ``(N,)``."""
        out = []
        for start in range(0, len(data["x"]), batch_size):
            x = data["x"][start:start + batch_size]
            mask = data.get("mask")
            out.append(self.classify(x, None if mask is None else mask[start:start + batch_size]).argmax(-1))
        return torch.cat(out)

    def scores(self, data: dict) -> tuple:
        """``(accuracy, macro-F1)`` of the classifier on ``data`` (``y`` all known)."""
        return accuracy_and_macro_f1(self.predict(data), data["y"], self.num_classes)

    def report_lines(self, test: dict) -> List[str]:
        """What ``pyrovae fit`` prints about the classifier at its end."""
        if "y" not in test:
            return []
        accuracy, f1 = self.scores(test)
        return [f"test accuracy: {100 * accuracy:.2f}%, macro-F1: {100 * f1:.2f}% ({len(test['y'])} texts)"]
