"""A model's unnormalized posterior as a function of one flat vector per datapoint.

MCMC over the latents of an amortized model (AIS, BDMC) needs, for each datapoint ``n``,
the log-joint as a function of one vector :math:`u_n \\in \\mathbb{R}^D`:

.. math:: \\log \\tilde\\pi(u_n) = \\log p(x_n, T(u_n)) + \\log |\\det J_T(u_n)|,

where every continuous latent site of the model is flattened into ``u`` (in the site's
unconstrained space, ``T = biject_to(support)``; the identity for real-valued latents).
The log-joint is not written by hand: the model is traced with ``z = T(u)`` substituted
(``poutine.condition``) under a plate of ``C`` chains placed left of every plate of the
program, so ``C`` chains for each of the ``N`` datapoints are evaluated in one pass, and each
site's log-density is summed down to ``(C, N)`` exactly as for the importance weights.

:class:`LatentSpace` also draws ``u`` from the prior or from a guide, evaluates the guide's
density, and :func:`simulate` draws ``(x, z) ~ p(x, z)`` keeping the exact ``z`` (the
"exact posterior sample" of bidirectional Monte Carlo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from pyrovae.infer.importance import (
    PARTICLE_PLATE, site_log_prob_per_datapoint, batch_size_of, bind_batch, preserved_rng,
)


@dataclass
class _Site:
    name: str
    data_index: int            # index of the data plate in the chain-padded value (chain dim at 0)
    rest: Tuple[int, ...]      # unconstrained value shape without the chain and data dims
    numel: int
    transform: Optional[torch.distributions.Transform]  # None: real-valued (identity)


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _sample_sites(trace):
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield site


def plate_nesting(trace) -> int:
    """The number of vectorized plate dimensions used in ``trace``."""
    nesting = 0
    for site in _sample_sites(trace):
        for frame in site["cond_indep_stack"]:
            if frame.vectorized:
                nesting = max(nesting, -frame.dim)
    return nesting


class LatentSpace:
    """The continuous latent sites of ``model`` on one batch, flattened per datapoint.

    :param callable model: a Pyro model taking the batch's tensors as keyword arguments.
    :param dict batch: named tensors, one datapoint per row (``N`` rows).

    :ivar int dim: ``D``, the length of one datapoint's flat latent vector.
    :ivar list names: the latent site names, in trace order.

    >>> from pyrovae.models import VAE
    >>> space = LatentSpace(VAE(6, 2), {"x": torch.zeros(4, 6)})
    >>> u = space.sample_prior(3)            # (chains, datapoints, D)
    >>> [tuple(t.shape) for t in space.log_density(u)]
    [(3, 4), (3, 4)]
    """

    def __init__(self, model: Callable, batch: Dict[str, torch.Tensor]):
        self.batch = batch
        self.n = batch_size_of(batch)
        self.model = bind_batch(model, batch)
        with poutine.block(), torch.no_grad(), preserved_rng():
            trace = poutine.trace(self.model).get_trace(**batch)
        self.nesting = plate_nesting(trace)
        self.sites = [self._describe(site) for site in _sample_sites(trace) if not site["is_observed"]]
        if not self.sites:
            raise ValueError("the model has no latent sample sites to integrate over")
        self.names = [s.name for s in self.sites]
        self.dim = sum(s.numel for s in self.sites)

    def _describe(self, site) -> _Site:
        fn, name = site["fn"], site["name"]
        if fn.support.is_discrete:
            raise ValueError(
                f"latent site {name!r} is discrete; AIS/HMC needs continuous latents "
                "(sum discrete latents out in the model, e.g. with enumeration)"
            )
        data_dim = None
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.size == self.n:
                data_dim = frame.dim
                break
        if data_dim is None:
            raise ValueError(
                f"latent site {name!r} is not inside a pyro.plate over the batch (size {self.n}); "
                "per-datapoint AIS needs every latent inside the data plate"
            )
        try:
            transform = None if _is_real(fn.support) else biject_to(fn.support)
        except NotImplementedError:
            raise ValueError(
                f"latent site {name!r} has support {fn.support}, which has no bijection to R^D; "
                "AIS/HMC needs latents in R^D or in a support torch can map there (positive, simplex, ...)"
            ) from None
        value = site["value"]
        if transform is not None:
            value = transform.inv(value)
        event_dim = fn.event_dim if transform is None else transform.domain.event_dim
        batch_dims = value.dim() - event_dim
        padded = (1,) * (self.nesting - batch_dims) + tuple(value.shape)
        data_index = 1 + self.nesting + data_dim
        rest = padded[: data_index - 1] + padded[data_index:]
        numel = 1
        for size in rest:
            numel *= size
        return _Site(name, data_index, rest, numel, transform)

    # ------------------------------------------------------------------ flat <-> sites

    def unflatten(self, u: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Site values ``T(u)`` laid out for a trace under the chain plate, and the summed
        ``log |det J_T|`` of shape ``(C, N)``."""
        c = u.shape[0]
        values, log_det = {}, u.new_zeros(c, self.n)
        start = 0
        for s in self.sites:
            piece = u[..., start:start + s.numel].reshape((c, self.n) + s.rest)
            start += s.numel
            piece = piece.movedim(1, s.data_index)
            if s.transform is None:
                values[s.name] = piece
                continue
            value = s.transform(piece)
            ladj = s.transform.log_abs_det_jacobian(piece, value)
            ladj = ladj.movedim(s.data_index, 1).reshape(c, self.n, -1).sum(-1)
            values[s.name] = value
            log_det = log_det + ladj
        return values, log_det

    def flatten(self, values: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`unflatten`: chain-plate site values -> ``u`` of shape (C, N, D)."""
        pieces = []
        for s in self.sites:
            value = values[s.name]
            if s.transform is not None:
                value = s.transform.inv(value)
            c = value.shape[0]
            padded = value.reshape((c,) + (1,) * (self.nesting + len(s.rest) + 2 - value.dim()) + value.shape[1:])
            pieces.append(padded.movedim(s.data_index, 1).reshape(c, self.n, s.numel))
        return torch.cat(pieces, -1)

    # ------------------------------------------------------------------ densities and draws

    def _trace(self, fn: Callable, num_chains: int, values: Optional[dict] = None):
        if values is not None:
            fn = poutine.condition(fn, data=values)
        with pyro.plate(PARTICLE_PLATE, num_chains, dim=-(self.nesting + 1)):
            return poutine.trace(fn).get_trace(**self.batch)

    def _reduce(self, trace, num_chains: int, latent: bool) -> torch.Tensor:
        total = None
        for site in _sample_sites(trace):
            if (site["name"] in self.names) != latent:
                continue
            term = site_log_prob_per_datapoint(site, self.n, self.nesting, num_chains)
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(num_chains, self.n, device=self.batch_device)
        return total

    @property
    def batch_device(self):
        return next(iter(self.batch.values())).device

    def log_density(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(log p(T(u)) + log|det J|, log p(x | T(u)))``, each ``(C, N)``: the prior of the
        latents in u-space and the log-density of everything observed (likelihood and factors)."""
        values, log_det = self.unflatten(u)
        trace = self._trace(self.model, u.shape[0], values)
        trace.compute_log_prob()
        return self._reduce(trace, u.shape[0], True) + log_det, self._reduce(trace, u.shape[0], False)

    def guide_log_density(self, guide: Callable, u: torch.Tensor) -> torch.Tensor:
        """``log q(T(u) | x) + log|det J|``, shape ``(C, N)``."""
        values, log_det = self.unflatten(u)
        trace = self._trace(bind_batch(guide, self.batch), u.shape[0], values)
        trace.compute_log_prob()
        return self._reduce(trace, u.shape[0], True) + log_det

    def sample_prior(self, num_chains: int) -> torch.Tensor:
        """``u`` drawn from the model's prior over its latents, ``(C, N, D)``."""
        with torch.no_grad():
            trace = self._trace(self.model, num_chains)
        return self.flatten({name: trace.nodes[name]["value"] for name in self.names})

    def sample_guide(self, guide: Callable, num_chains: int) -> torch.Tensor:
        """``u`` drawn from the guide, ``(C, N, D)``."""
        with torch.no_grad():
            trace = self._trace(bind_batch(guide, self.batch), num_chains)
        missing = [name for name in self.names if name not in trace.nodes]
        if missing:
            raise ValueError(f"the guide does not sample the model's latent sites {missing}")
        return self.flatten({name: trace.nodes[name]["value"] for name in self.names})


def simulate(model: Callable, batch: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], LatentSpace, torch.Tensor]:
    """Draw ``(x, z) ~ p(x, z)`` with the shapes of ``batch``, keeping the exact latents.

    Every observed site of the model must be named after the batch key it observes (the
    suite's convention: site ``"x"`` observes ``batch["x"]``); other keys (labels) are kept.

    :returns: ``(simulated batch, its LatentSpace, u)`` with ``u`` the true latents, ``(1, N, D)``;
        ``u`` is an exact draw from the posterior ``p(z | x)`` of the simulated ``x``.
    """
    space = LatentSpace(model, batch)
    bound = space.model
    with poutine.block(), torch.no_grad():
        observed = [s["name"] for s in _sample_sites(poutine.trace(bound).get_trace(**batch)) if s["is_observed"]]
        trace = space._trace(poutine.uncondition(bound), 1)
    simulated = dict(batch)
    for name in observed:
        if name not in batch:
            raise ValueError(
                f"observed site {name!r} is not a key of the batch {list(batch)}; simulating data "
                "needs the observed sites named after the batch keys they observe"
            )
        simulated[name] = trace.nodes[name]["value"].reshape(batch[name].shape).to(batch[name].dtype)
    u = space.flatten({name: trace.nodes[name]["value"] for name in space.names})
    return simulated, LatentSpace(model, simulated), u
