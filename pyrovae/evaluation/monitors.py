"""Posterior-collapse and information monitors of an amortized posterior q(z | x).

For a latent site ``z`` with a vector event (``z_dim``) and data points :math:`x_1..x_N`:

- **active units** (Burda et al.): dimension ``j`` is active when
  :math:`A_j = \\operatorname{Var}_{x}\\big(\\mathbb{E}_{q(z \\mid x)}[z_j]\\big) > 0.01`;
  a collapsed dimension encodes nothing about ``x``.
- **KL per dimension**: :math:`\\frac1N \\sum_n \\mathrm{KL}(q(z_j \\mid x_n) \\,\\|\\, p(z_j))`,
  analytic where ``kl_divergence`` knows the pair of factors, else sampled.
- **rate** :math:`R = \\mathbb{E}_x \\mathrm{KL}(q(z \\mid x) \\| p(z))` and **distortion**
  :math:`D = -\\mathbb{E}_x \\mathbb{E}_q \\log p(x \\mid z)`; the ELBO is :math:`-(R + D)`
  (Alemi et al.).
- **mutual information** :math:`I_q(x; z) = \\mathbb{E}_x \\mathrm{KL}(q(z \\mid x) \\| q(z))`
  with the aggregate posterior :math:`q(z)` approximated by the mixture over the evaluated
  datapoints, :math:`q(z) \\approx \\frac1N \\sum_m q(z \\mid x_m)` (the minibatch estimator of
  Hoffman & Johnson, as used by He et al.), with one draw :math:`z \\sim q(z \\mid x_n)` per
  datapoint by default. It is at most :math:`\\log N` and is 0 when q ignores x.

References

[1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. arXiv:1509.00519
[2] Alemi et al. Fixing a Broken ELBO. arXiv:1711.00464
[3] Hoffman, Johnson. ELBO surgery. NIPS 2016 Workshop on Advances in Approximate Bayesian Inference
[4] He, Spokoyny, Neubig, Berg-Kirkpatrick. Lagging Inference Networks and Posterior
    Collapse in Variational Autoencoders. arXiv:1901.05534
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from pyrovae.evaluation.log_likelihood import eval_mode
from pyrovae.data.inputs import eval_split
from pyrovae.distributions.mean import posterior_mean
from pyrovae.infer.importance import (
    PARTICLE_PLATE, batch_size_of, bind_batch, kl_or_sampled, latent_sites, observed_sites, plate_nesting,
    preserved_rng,
)

ACTIVE_THRESHOLD = 0.01


class MonitorNotApplicable(ValueError):
    """The pair has no single vector-valued latent site inside the data plate."""


def latent_site(guide: Callable, batch: dict, site: Optional[str] = None):
    """Trace the guide on ``batch`` (no particle plate) and return ``(name, q, guide_trace)``
    with ``q`` the distribution of the latent site: batch shape ``(N,)``, event ``(z_dim,)``."""
    n = batch_size_of(batch)
    trace = poutine.trace(bind_batch(guide, batch)).get_trace(**batch)
    latents = latent_sites(trace)
    if site is None:
        if len(latents) != 1:
            raise MonitorNotApplicable(
                f"the guide samples {len(latents)} latent sites ({[s['name'] for s in latents]}); "
                "choose the one to monitor with --site NAME (pyrovae diagnose; site= in Python)")
        chosen = latents[0]
    else:
        chosen = next((s for s in latents if s["name"] == site), None)
        if chosen is None:
            raise MonitorNotApplicable(f"the guide has no latent site {site!r} (--site); its latent sites: "
                                       f"{', '.join(s['name'] for s in latents)}")
    q = chosen["fn"]
    if tuple(q.batch_shape) != (n,) or len(q.event_shape) != 1:
        raise MonitorNotApplicable(
            f"site {chosen['name']!r} has batch shape {tuple(q.batch_shape)} and event shape "
            f"{tuple(q.event_shape)}; the monitors need batch shape ({n},) and a vector event")
    return chosen["name"], q, trace


def active_units(means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> Tuple[int, torch.Tensor]:
    """``(count, A)`` with ``A_j = Var_n(means[n, j])`` (population variance over datapoints)."""
    variance = means.var(0, unbiased=False)
    return int((variance > threshold).sum()), variance


def _factors(d: dist.Distribution):
    """The univariate factors of a diagonal distribution (Normal or Independent of one), else None."""
    if isinstance(d, dist.Independent) and d.reinterpreted_batch_ndims == 1:
        d = d.base_dist
        return d if d.event_shape == () else None
    return None


def kl_per_dim(q: dist.Distribution, p: dist.Distribution, num_samples: int = 16) -> Tuple[Optional[torch.Tensor], str]:
    """Per-datapoint KL of each latent dimension, ``(N, z_dim)``, and how it was computed.

    ``"analytic"`` where ``kl_divergence`` knows the pair of factors, ``"sampled"`` for other
    factorized pairs (``num_samples`` draws), ``(None, "unavailable")`` when either side does
    not factorize over dimensions (flows, full covariance).
    """
    qf, pf = _factors(q), _factors(p)
    if qf is None or pf is None:
        return None, "unavailable"
    kl, analytic = kl_or_sampled(qf, pf, num_samples=num_samples)
    return kl, "analytic" if analytic else "sampled"


def mutual_information(q: dist.Distribution, num_samples: int = 1, chunk: int = 128) -> float:
    """The minibatch estimate of :math:`I_q(x; z)` over the ``N`` datapoints of ``q``:

    .. math:: \\hat I = \\frac{1}{NS} \\sum_{n,s} \\Big[\\log q(z_{ns} \\mid x_n)
              - \\log \\frac1N \\sum_m q(z_{ns} \\mid x_m)\\Big], \\qquad z_{ns} \\sim q(z \\mid x_n).

    Each term is at most :math:`\\log N`, so :math:`0 \\le \\hat I \\le \\log N` up to noise.
    """
    n = q.batch_shape[0]
    z = q.sample((num_samples,))                        # (S, N, D)
    own = q.log_prob(z)                                 # (S, N)
    aggregate = []
    for lo in range(0, n, chunk):
        cross = q.log_prob(z[:, lo:lo + chunk].unsqueeze(-2))   # (S, B, N): log q(z_sb | x_m)
        aggregate.append(torch.logsumexp(cross, -1) - math.log(n))
    return float((own - torch.cat(aggregate, 1)).double().mean())


@dataclass
class LatentMonitors:
    """Monitors of one latent site over ``num_datapoints`` datapoints (see the module docs).

    :ivar torch.Tensor mean_variance: (z_dim,) ``Var_x E_q[z_j]``, the activity of each unit.
    :ivar torch.Tensor kl_per_dim: (z_dim,) mean KL per dimension, or None.
    :ivar float mutual_information: NaN where q has no density at arbitrary points.
    """

    site: str
    active_units: int
    num_latents: int
    mean_variance: torch.Tensor
    kl_per_dim: Optional[torch.Tensor]
    kl_method: str
    rate: float
    distortion: float
    mutual_information: float
    num_datapoints: int

    def summary(self) -> dict:
        """Scalars for a metrics row."""
        row = {"active_units": self.active_units, "rate": self.rate, "distortion": self.distortion}
        if math.isfinite(self.mutual_information):
            row["mutual_info"] = self.mutual_information
        if self.kl_per_dim is not None:
            kl = self.kl_per_dim
            row.update(kl_dim_min=float(kl.min()), kl_dim_median=float(kl.median()), kl_dim_max=float(kl.max()))
        return row

    def as_dict(self) -> dict:
        out = {**self.summary(), "site": self.site, "num_latents": self.num_latents, "kl_method": self.kl_method,
               "num_datapoints": self.num_datapoints, "mean_variance": self.mean_variance.tolist()}
        if self.kl_per_dim is not None:
            out["kl_per_dim"] = self.kl_per_dim.tolist()
        return out


def latent_monitors(model: Callable, guide: Callable, data, *, site: Optional[str] = None,
                    num_samples: int = 1, max_datapoints: Optional[int] = 1000, split: str = "test",
                    data_dir=None, device=None, flow_mutual_information: bool = True) -> LatentMonitors:
    """Active units, KL per dimension, rate, distortion and mutual information in one pass.

    :param data: a tensor, a dict of tensors, a DataSet or a data set name (its ``split``).
    :param str site: the latent site to monitor (default: the guide's only latent site).
    :param int num_samples: draws per datapoint for the sampled terms (distortion, MI).
    :param int max_datapoints: use at most this many datapoints (the first ones).
    :param bool flow_mutual_information: also estimate the mutual information when q is a
        normalizing flow: scoring every draw under every datapoint's q inverts the flow N^2
        times, which the per-epoch monitors of fit skip (NaN).
    :raises MonitorNotApplicable: no single vector-valued latent site in the data plate.

    >>> from pyrovae.models import VAE
    >>> from pyrovae.guides import DiagNormalGuide
    >>> m = latent_monitors(VAE(6, 3), DiagNormalGuide(6, 3), torch.rand(50, 6).round())
    >>> m.num_latents, m.kl_method
    (3, 'analytic')
    """
    batch = eval_split(data, split, data_dir, device)
    if max_datapoints is not None:
        batch = {k: v[:max_datapoints] for k, v in batch.items()}
    n = batch_size_of(batch)
    with torch.no_grad(), eval_mode(model, guide), pyro.validation_enabled(False):
        name, q, guide_trace = latent_site(guide, batch, site)
        model_trace = poutine.trace(poutine.replay(bind_batch(model, batch), trace=guide_trace)).get_trace(**batch)
        if name not in model_trace.nodes:
            raise MonitorNotApplicable(f"the model has no site {name!r} (the guide's latent)")
        p = model_trace.nodes[name]["fn"]
        count, variance = active_units(posterior_mean(q))
        kl, method = kl_per_dim(q, p)
        z = q.sample((num_samples,))                                  # (S, N, D)
        rate = float(kl.sum(-1).double().mean()) if kl is not None else \
            float((q.log_prob(z) - p.log_prob(z)).double().mean())
        distortion = -_observed_log_prob(model, batch, name, z)
        try:
            if not flow_mutual_information and isinstance(q, torch.distributions.TransformedDistribution):
                raise NotImplementedError
            mi = mutual_information(q, num_samples)
        except NotImplementedError:  # q has no density at other datapoints' draws (planar/radial flows)
            mi = float("nan")
    return LatentMonitors(name, count, q.event_shape[0], variance.cpu(),
                          None if kl is None else kl.mean(0).cpu(), method, rate, distortion, mi, n)


def _observed_log_prob(model, batch, name, z) -> float:
    """``E log p(x | z)`` over the draws ``z`` (S, N, D) and datapoints, summed over the observed
    sites (with their scale and mask)."""
    num_samples, n = z.shape[0], batch_size_of(batch)
    bound = bind_batch(model, batch)
    nesting = plate_nesting(poutine.trace(bound).get_trace(**batch))
    z = z.reshape((num_samples,) + (1,) * (nesting - 1) + z.shape[1:])
    with pyro.plate(PARTICLE_PLATE, num_samples, dim=-(nesting + 1)):
        trace = poutine.trace(poutine.condition(bound, data={name: z})).get_trace(**batch)
    trace.compute_log_prob(lambda site_name, site: site_name != name)
    total = 0.0
    for site in observed_sites(trace):
        if site["name"] != name:
            total += float(site["log_prob"].double().sum()) / (num_samples * n)
    return total


def epoch_monitors(model: Callable, guide: Callable, data: dict, max_datapoints: int = 1000) -> dict:
    """The cheap per-epoch summary for the training log (one pass over at most
    ``max_datapoints`` datapoints, no gradients, the random streams left untouched), or ``{}``
    for a pair the monitors do not apply to."""
    try:
        with preserved_rng():
            return latent_monitors(model, guide, data, max_datapoints=max_datapoints,
                                   flow_mutual_information=False).summary()
    except (MonitorNotApplicable, NotImplementedError):
        return {}
