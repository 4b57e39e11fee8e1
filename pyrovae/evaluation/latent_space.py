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
from torch.distributions import biject_to

from pyrovae.infer.importance import (
    PARTICLE_PLATE, batch_size_of, bind_batch, data_dim, data_plate, declared_data_plate, latent_sites,
    log_density_per_datapoint, observed_sites, plate_nesting, preserved_rng, sample_sites,
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
        self.plate = data_plate(trace, self.n, declared_data_plate(model))
        self.sites = [self._describe(site) for site in latent_sites(trace)]
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
        dim = data_dim(site, self.plate, self.n)
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
        data_index = 1 + self.nesting + dim
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
        sites = [site for site in sample_sites(trace) if (site["name"] in self.names) == latent]
        total = log_density_per_datapoint(sites, self.n, self.nesting, num_chains,
                                          data_plate(trace, self.n, self.plate))
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

    Each observed site of the model replaces the batch tensor it observes (the one passed as
    ``obs=``, found by identity, else the key of the same name); other keys (labels) are kept.

    :returns: ``(simulated batch, its LatentSpace, u)`` with ``u`` the true latents, ``(1, N, D)``;
        ``u`` is an exact draw from the posterior ``p(z | x)`` of the simulated ``x``.
    """
    space = LatentSpace(model, batch)
    bound = space.model
    with poutine.block(), torch.no_grad():
        observed = {s["name"]: observed_key(s, batch) for s in observed_sites(poutine.trace(bound).get_trace(**batch))}
        trace = space._trace(poutine.uncondition(bound), 1)
    simulated = dict(batch)
    for name, key in observed.items():
        simulated[key] = trace.nodes[name]["value"].reshape(batch[key].shape).to(batch[key].dtype)
    u = space.flatten({name: trace.nodes[name]["value"] for name in space.names})
    return simulated, LatentSpace(model, simulated), u


def observed_key(site: dict, batch: Dict[str, torch.Tensor]) -> str:
    """The batch key whose tensor an observed site observes: the tensor passed as ``obs=``
    itself, else the key of the site's name."""
    for key, value in batch.items():
        if value is site["value"]:
            return key
    if site["name"] in batch:
        return site["name"]
    raise ValueError(
        f"observed site {site['name']!r} observes none of the batch's tensors {list(batch)} as it was given "
        "(it was transformed before obs=); pass the batch tensor itself as obs=, or name the site after its key"
    )
