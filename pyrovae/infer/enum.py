"""The ELBO with discrete latent sites summed out exactly: objective ``enum``.

Every guide site marked ``infer={"enumerate": "parallel"}`` (by hand, or by Pyro's
``config_enumerate``) is summed over its support instead of sampled, with Pyro's
``TraceEnum_ELBO``: for a discrete ``y`` and a continuous ``z``,

.. math:: \\mathrm{ELBO}(x) = \\sum_y q(y \\mid x)\\, \\mathbb{E}_{q(z \\mid x, y)}
          [\\log p(x, y, z) - \\log q(y \\mid x) - \\log q(z \\mid x, y)],

with no score-function estimator for ``y`` (the sum is exact; only ``z`` is sampled). Any pair
with discrete sites can use it; sites not marked are sampled, as under ``elbo``. The loss is
the negative bound per datapoint (the batch mean), as for every objective of the suite, and
``beta`` / ``warmup_steps`` scale the latent sites (enumerated ones included).

**The classifier term** (Kingma et al. 2014, eq. 9). With ``alpha > 0`` and a batch that
carries ``labelled`` (a boolean mask) and ``y`` (the labels, read where ``labelled``), the loss
adds the classification log-likelihood of the labelled rows,

.. math:: \\text{loss} = -\\frac{1}{B} \\sum_{n=1}^{B}
          \\Big(\\mathrm{ELBO}_n + \\alpha\\, [\\text{labelled}_n] \\log q(y_n \\mid x_n)\\Big),

``alpha`` per labelled row of the batch. ``q(y | x)`` is read from the guide's
``classify(x)`` method (the logits of its classifier); a guide without one gets a one-line
error. Kingma et al. use :math:`\\alpha = 0.1 N` on :math:`\\sum_{\\text{rows}} \\mathrm{ELBO} +
\\alpha\\, \\mathbb{E}_{\\text{labelled}}[\\log q(y \\mid x)]`; in the per-row units here that is
:math:`0.1 N / (r N_l)` for a stream that shows each of :math:`N_l` labelled rows ``r`` times
per epoch of :math:`N` images; the semi-supervised data sets (pyrovae/data/semisupervised.py)
choose ``r`` (the labelled rows at least a tenth of the stream, each at least 10 times) and
give the exact value as ``paper_alpha`` (1.0 at 100 labels of MNIST, 0.17 at 3000). **The default
is 50**, not the paper's 1: at a CPU budget (10 epochs) the paper's weight leaves the classifier
far behind Pyro's own M2 example (whose ``-alm 46`` per labelled row is 28 times the paper's at
3000 labels), and behind a classifier trained on the labelled rows alone; measured in
docs/semi-supervised.md.

**Replay and CUDA graphs.** On a CPU ``fit`` records the step once and replays it
(pyrovae/training/replay.py; ``replayable`` accepts this objective: the replay checks its
recording against the eager step on another batch, and M2's one-hot codes are made without a
host read): M2's step replayed is 0.96 of its eager step (docs/performance.md). The objective
is not one of ``pyrovae.infer.objectives`` (the module ``graph_safe`` trusts), so ``fit`` does
not capture it in a CUDA graph, which has no such check: on a GPU it takes the eager step.
Nothing here reads the device on the host; the batch's ``labelled`` mask stays on the device.

References

[1] Kingma, Rezende, Mohamed, Welling. Semi-Supervised Learning with Deep Generative Models.
    NeurIPS 2014. arXiv:1406.5298
[2] Obermeyer et al. Tensor Variable Elimination for Plated Factor Graphs. ICML 2019 (Pyro's
    enumeration)
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from pyrovae.infer.importance import batch_size_of, bind_batch, guess_max_plate_nesting
from pyrovae.infer.objectives import Objective, check_particles, particles
from pyrovae.registry import register_objective


#: the classifier term's default weight per labelled row (docs/semi-supervised.md: why not the paper's 1)
DEFAULT_ALPHA = 50.0


@register_objective("enum")
class EnumELBO(Objective):
    """The ELBO with enumerated discrete sites (``TraceEnum_ELBO``), plus ``alpha`` times the
    classifier's log-likelihood of the labelled rows (Kingma et al.'s M2).

    :param float alpha: the classifier term's weight per labelled row (``--alpha``; 0: none;
        default 50, not the paper's about 1: docs/semi-supervised.md).
    :param int num_particles: samples of the non-enumerated sites per datapoint (vectorized).
    :param int max_plate_nesting: the pair's plate depth (0: found from one trace of the pair).
    :param str labels: the batch key of the labels (the mask is ``labelled``).

    >>> EnumELBO(alpha=0.5).options.alpha
    0.5
    """

    name = "enum"
    weight_as_input = False  # TraceEnum_ELBO reads the enumerated sites' common scale with float()

    @dataclass
    class Options(Objective.Options):
        alpha: float = DEFAULT_ALPHA
        num_particles: int = particles(1)
        max_plate_nesting: int = 0
        labels: str = "y"

        def __post_init__(self):
            super().__post_init__()
            if not self.alpha >= 0:
                raise ValueError(f"the enum objective needs alpha >= 0 (the classifier term's weight), got {self.alpha}")
            check_particles(self.num_particles)
            if not isinstance(self.max_plate_nesting, int) or self.max_plate_nesting < 0:
                raise ValueError(f"max_plate_nesting must be >= 0 (0: found from the pair), got {self.max_plate_nesting}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.alpha, self.num_particles = float(o.alpha), int(o.num_particles)
        self.max_plate_nesting, self.labels = int(o.max_plate_nesting), o.labels
        self._elbos: Dict[tuple, TraceEnum_ELBO] = {}

    def _elbo(self, model, guide, batch) -> TraceEnum_ELBO:
        key = (id(poutine.unwrap(model)), id(poutine.unwrap(guide)))
        if key not in self._elbos:
            nesting = self.max_plate_nesting or guess_max_plate_nesting(model, guide, batch)
            self._elbos[key] = TraceEnum_ELBO(max_plate_nesting=nesting, num_particles=self.num_particles,
                                              vectorize_particles=self.num_particles > 1)
        return self._elbos[key]

    def elbo_loss(self, model, guide, batch) -> torch.Tensor:
        """The negative enumerated ELBO, per datapoint (no classifier term)."""
        model, guide = _bound(model, batch), _bound(guide, batch)
        return self._elbo(model, guide, batch).differentiable_loss(model, guide, **batch) / batch_size_of(batch)

    def classifier_log_likelihood(self, guide, batch) -> Optional[torch.Tensor]:
        """``sum_n [labelled_n] log q(y_n | x_n)`` over the batch (None when the batch has no
        ``labelled`` mask)."""
        labelled = batch.get("labelled")
        if labelled is None:
            return None
        classify = getattr(poutine.unwrap(guide), "classify", None)
        if classify is None:
            inner = getattr(guide, "__wrapped__", guide)
            classify = getattr(inner, "classify", None)
        if classify is None:
            raise ValueError(f"the enum objective's classifier term (alpha={self.alpha}) needs a guide with a "
                             "classify(x) method returning the logits of q(y | x); pass --alpha 0 for the "
                             "enumerated ELBO alone")
        if self.labels not in batch:
            raise ValueError(f"the batch has a 'labelled' mask but no labels {self.labels!r}")
        labelled = labelled.bool()
        y = torch.where(labelled, batch[self.labels].long(), torch.zeros_like(batch[self.labels], dtype=torch.long))
        # a classifier of sequences (guides/ssvae_text.py) also takes the batch's mask
        extra = {"mask": batch["mask"]} if "mask" in batch and _takes_mask(getattr(classify, "__func__", classify)) else {}
        log_q = F.log_softmax(classify(batch["x"], **extra), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return (log_q * labelled.to(log_q.dtype)).sum()

    def loss(self, model, guide, batch) -> torch.Tensor:
        loss = self.elbo_loss(model, guide, batch)
        if self.alpha > 0:
            term = self.classifier_log_likelihood(guide, batch)
            if term is not None:
                loss = loss - self.alpha * term / batch_size_of(batch)
        return loss


def _bound(fn, batch):
    """``fn`` given the batch keys it names (the callers in fit pass it already bound)."""
    if hasattr(fn, "__wrapped__"):  # bound already (pyrovae.infer.importance.bind_batch)
        return fn
    return bind_batch(fn, batch)


@functools.lru_cache(maxsize=None)
def _takes_mask(function) -> bool:
    """Whether a classifier takes the batch's ``mask`` (read once per function, not per step)."""
    return "mask" in inspect.signature(function).parameters
