"""The inference gap of an amortized posterior, split in two (Cremer et al.).

.. math::
    \\underbrace{\\log p(x) - \\mathcal{L}[q_\\phi]}_{\\text{inference gap}}
    = \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation gap}}
    + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q_\\phi]}_{\\text{amortization gap}},

where :math:`q_\\phi(z \\mid x)` is the encoder's output and :math:`q^*` the best member of the
same family *for this datapoint*, found by optimizing the distribution's parameters
(``loc``, ``log scale``) per datapoint by stochastic gradient ascent on the ELBO, starting
from the encoder's output. A large amortization gap says the encoder generalizes poorly
(a bigger or better-trained encoder, or iterative refinement, would help); a large
approximation gap says the family itself is too narrow (use a richer guide: flows, IAF).

The refinement is stochastic (Adam on a Monte Carlo ELBO, cosine-decayed learning rate);
where it ends below the encoder's own ELBO for a datapoint, the encoder's output is kept as
:math:`q^*`, so the amortization gap is never negative.

``log p(x)`` comes from the best available estimator: importance sampling with many
samples from the equal mixture of :math:`q_\\phi` and :math:`q^*` (a defensive proposal: the
mode-seeking :math:`q^*` alone can be too narrow for a correlated posterior, and its weights
then have an infinite variance), or AIS.

References

[1] Cremer, Li, Duvenaud. Inference Suboptimality in Variational Autoencoders. arXiv:1801.03558
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F

from pyrovae.evaluation.ais import DEFAULT_AIS_STEPS
from pyrovae.evaluation.log_likelihood import eval_mode
from pyrovae.data.inputs import eval_split
from pyrovae.infer.importance import (
    batch_size_of, bind_batch, data_dim, data_plate, declared_data_plate, guess_max_plate_nesting, latent_sites,
    log_mean_exp, log_weights, preserved_rng,
)


class LocalGaussianGuide:
    """A non-amortized diagonal Gaussian, one ``(loc, scale)`` per datapoint of a fixed batch.

    Samples the same site inside a plate of the same name and dim as the guide it refines.

    :param torch.Tensor loc: (N, z_dim) initial means.
    :param torch.Tensor scale: (N, z_dim) initial standard deviations.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, site: str = "z", plate: str = "data", dim: int = -1):
        self.loc = loc.detach().clone().requires_grad_(True)
        self.raw_scale = (scale.detach() - 1e-5).clamp(min=1e-6).expm1().log().requires_grad_(True)
        self.site, self.plate, self.dim = site, plate, dim

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + 1e-5

    def parameters(self):
        return [self.loc, self.raw_scale]

    def __call__(self, **batch):
        with pyro.plate(self.plate, self.loc.shape[0], dim=self.dim):
            return pyro.sample(self.site, dist.Normal(self.loc, self.scale).to_event(1))


def local_gaussian(guide: Callable, batch: dict) -> LocalGaussianGuide:
    """The guide's output on ``batch`` as a :class:`LocalGaussianGuide` (to refine it).

    :raises ValueError: the guide has more than one latent site, or its ``q(z | x)`` is not a
        diagonal Normal (``Normal(loc, scale).to_event(1)``) with batch shape ``(N,)``.
    """
    n = batch_size_of(batch)
    with torch.no_grad(), preserved_rng(), poutine.block():
        trace = poutine.trace(bind_batch(guide, batch)).get_trace(**batch)
    latents = latent_sites(trace)
    q = latents[0]["fn"] if len(latents) == 1 else None
    base = q.base_dist if isinstance(q, dist.Independent) and q.reinterpreted_batch_ndims == 1 else None
    if not isinstance(base, dist.Normal) or tuple(q.batch_shape) != (n,):
        kind = type(q).__name__ if q is not None else f"{len(latents)} latent sites"
        raise ValueError(
            f"the amortization gap refines a diagonal Gaussian q(z|x) = Normal(loc, scale).to_event(1) "
            f"per datapoint; this guide gives {kind}. Use a guide with one diagonal-Gaussian latent "
            "site (e.g. the 'diag' guide), or compare guides by their log-likelihoods instead")
    site = latents[0]
    plate = data_plate(trace, n, declared_data_plate(guide))
    return LocalGaussianGuide(base.loc, base.scale, site["name"], plate, data_dim(site, plate, n))


def refine(model: Callable, local: LocalGaussianGuide, batch: dict, num_steps: int = 300,
           num_particles: int = 10, lr: float = 0.05, max_plate_nesting=None) -> LocalGaussianGuide:
    """Maximize each datapoint's ELBO over its own ``(loc, scale)`` with Adam (in place).

    The loss is the sum over datapoints of their negative ELBOs (``num_particles`` draws), so
    each datapoint's parameters follow their own ELBO's gradient; the learning rate decays to 0
    on a cosine schedule, and the model is left unchanged (only the local parameters are
    differentiated).
    """
    model = bind_batch(model, batch)
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, local, batch)
    optimizer = torch.optim.Adam(local.parameters(), lr=lr)
    # cosine decay to 0: the final iterates settle despite the noise
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_steps)
    for _ in range(num_steps):
        loss = -log_weights(model, local, batch, num_particles, max_plate_nesting=max_plate_nesting).mean(0).sum()
        grads = torch.autograd.grad(loss, local.parameters())
        for p, g in zip(local.parameters(), grads):
            p.grad = g
        optimizer.step()
        schedule.step()
    return local


def defensive_log_likelihood(model: Callable, batch: dict, components, num_samples: int,
                             max_pass: int = 50_000) -> torch.Tensor:
    """``log p(x)`` per datapoint (N,) by importance sampling from an equal mixture of diagonal
    Gaussians, ``components = [(loc, scale), ...]`` each (N, z_dim), for a model whose only
    latent is that z. Draws are stratified (``num_samples / M`` from each component) and
    weighted by the mixture density (the balance heuristic, unbiased for p(x)):

    .. math:: \\hat p(x) = \\frac1K \\sum_k \\frac{p(x, z_k)}{\\frac1M \\sum_m q_m(z_k)}.
    """
    from pyrovae.evaluation.latent_space import LatentSpace

    space = LatentSpace(model, batch)
    loc0 = components[0][0]
    if space.dim != loc0.shape[-1] or any(site.transform is not None for site in space.sites):
        raise ValueError("defensive_log_likelihood needs a model whose only latent is the guide's real vector z")
    qs = [dist.Normal(loc, scale) for loc, scale in components]
    n, m = loc0.shape[0], len(qs)
    per = max(1, num_samples // m)
    chunk = max(1, max_pass // n)
    log_w = []
    for q in qs:
        for lo in range(0, per, chunk):
            z = q.sample((min(chunk, per - lo),))                      # (k, N, D)
            log_mix = torch.logsumexp(torch.stack([c.log_prob(z).sum(-1) for c in qs]), 0) - math.log(m)
            log_prior, log_lik = space.log_density(z)
            log_w.append((log_prior + log_lik - log_mix).double())
    return log_mean_exp(torch.cat(log_w), 0)


@dataclass
class InferenceGap:
    """The gap split, means over ``num_datapoints`` datapoints, in nats.

    :ivar float log_likelihood: the estimate of log p(x).
    :ivar float elbo_amortized: ELBO of the encoder's q.
    :ivar float elbo_refined: ELBO of the per-datapoint optimized q* (same family).
    :ivar float approximation_gap: log p(x) - ELBO(q*).
    :ivar float amortization_gap: ELBO(q*) - ELBO(q).
    """

    log_likelihood: float
    elbo_amortized: float
    elbo_refined: float
    approximation_gap: float
    amortization_gap: float
    estimator: str
    num_datapoints: int
    refine_steps: int
    per_datapoint: dict

    @property
    def inference_gap(self) -> float:
        return self.log_likelihood - self.elbo_amortized

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "log_likelihood", "elbo_amortized", "elbo_refined", "approximation_gap", "amortization_gap",
            "inference_gap", "estimator", "num_datapoints", "refine_steps")}


def _elbo_per_datapoint(model, guide, batch, num_samples, nesting) -> torch.Tensor:
    parts, left = [], num_samples
    while left > 0:
        k = min(left, max(1, 50_000 // batch_size_of(batch)))
        parts.append(log_weights(bind_batch(model, batch), bind_batch(guide, batch), batch, k,
                                 max_plate_nesting=nesting).double().sum(0))
        left -= k
    return sum(parts) / num_samples


def inference_gap(
    model: Callable, guide: Callable, data, num_datapoints: int = 100, *, refine_steps: int = 300,
    num_particles: int = 10, lr: float = 0.05, elbo_samples: int = 1000, estimator: str = "iwae",
    num_samples: int = 5000, ais_steps: int = DEFAULT_AIS_STEPS, ais_chains: int = 16, split: str = "test",
    data_dir=None, device=None,
) -> InferenceGap:
    """Split ``log p(x) - ELBO`` into the approximation and amortization gaps.

    :param data: a tensor, a dict of tensors, a DataSet or a data set name (its ``split``).
    :param int num_datapoints: use the first this many datapoints (refined jointly).
    :param int refine_steps: Adam steps of the per-datapoint refinement.
    :param int num_particles: ELBO draws per step of the refinement.
    :param float lr: Adam's learning rate for the refinement.
    :param int elbo_samples: draws for the final ELBOs of q and q*.
    :param str estimator: ``"iwae"`` (``num_samples`` importance samples from the mixture of q
        and q*, see :func:`defensive_log_likelihood`) or ``"ais"``.
    :returns: :class:`InferenceGap`.

    >>> from pyrovae.models import LinearGaussianVAE
    >>> from pyrovae.guides import DiagNormalGuide
    >>> gap = inference_gap(LinearGaussianVAE(4, 2), DiagNormalGuide(4, 2), torch.randn(8, 4),
    ...                     refine_steps=50, num_samples=100)
    >>> gap.amortization_gap > 0
    True
    """
    if estimator not in ("iwae", "ais"):
        raise ValueError(f"estimator must be 'iwae' or 'ais', got {estimator!r}")
    batch = eval_split(data, split, data_dir, device)
    batch = {k: v[:num_datapoints] for k, v in batch.items()}
    n = batch_size_of(batch)
    with eval_mode(model, guide), pyro.validation_enabled(False):
        local = local_gaussian(guide, batch)
        encoder_loc, encoder_scale = local.loc.detach().clone(), local.scale.detach().clone()
        nesting = guess_max_plate_nesting(bind_batch(model, batch), bind_batch(guide, batch), batch)
        with torch.no_grad():
            amortized = _elbo_per_datapoint(model, guide, batch, elbo_samples, nesting)
        refine(model, local, batch, refine_steps, num_particles, lr, nesting)
        with torch.no_grad():
            refined = _elbo_per_datapoint(model, local, batch, elbo_samples, nesting)
        # q* is the best member of the family found: the encoder's own output where the noisy
        # refinement did not improve on it (so the amortization gap is never negative)
        refined = torch.maximum(refined, amortized)
        if estimator == "iwae":
            with torch.no_grad():
                log_p = defensive_log_likelihood(model, batch, [(encoder_loc, encoder_scale),
                                                                (local.loc, local.scale)], num_samples)
            name = f"mixture-is-{num_samples}"
        else:
            from pyrovae.evaluation.ais import ais_log_likelihood

            log_p = ais_log_likelihood(model, guide, batch, num_steps=ais_steps, num_chains=ais_chains).per_datapoint
            name = f"ais-{ais_steps}x{ais_chains}"
    log_p, amortized, refined = log_p.double().cpu(), amortized.cpu(), refined.cpu()
    return InferenceGap(
        log_likelihood=float(log_p.mean()), elbo_amortized=float(amortized.mean()),
        elbo_refined=float(refined.mean()), approximation_gap=float((log_p - refined).mean()),
        amortization_gap=float((refined - amortized).mean()), estimator=name, num_datapoints=n,
        refine_steps=refine_steps,
        per_datapoint={"log_likelihood": log_p, "elbo_amortized": amortized, "elbo_refined": refined},
    )
