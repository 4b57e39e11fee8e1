"""Hamiltonian Monte Carlo for many independent chains at once, in plain torch.

Pyro's HMC kernel takes a scalar potential: all chains would share one Metropolis
accept/reject. Annealed importance sampling needs each chain of each datapoint to move on
its own, so the leapfrog integrator below works on a batch of states ``u`` of shape
``(C, N, D)`` (chains, datapoints, latent dimension), accepts or rejects each chain
separately, and keeps one step size per datapoint, adapted toward a target acceptance rate.

The annealed target is the geometric path between a normalized start density
:math:`\\pi_0` (the prior or the guide) and the joint :math:`p(x, z)`:

.. math:: \\log f_\\beta(u) = (1 - \\beta) \\log \\pi_0(u) + \\beta \\log p(x, u),

so a state keeps both terms and their gradients, and :math:`f_\\beta` is formed for any
:math:`\\beta` without a new pass through the model.

References

[1] Neal. MCMC using Hamiltonian dynamics. arXiv:1206.1901
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch


@dataclass
class PathState:
    """Chains at ``u`` with the start and target log-densities and their gradients."""

    u: torch.Tensor            # (C, N, D)
    log_start: torch.Tensor    # (C, N)  log pi_0(u)
    log_target: torch.Tensor   # (C, N)  log p(x, u)
    grad_start: torch.Tensor   # (C, N, D)
    grad_target: torch.Tensor  # (C, N, D)

    def log_f(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.log_start + beta * self.log_target

    def grad_f(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.grad_start + beta * self.grad_target

    @property
    def log_ratio(self) -> torch.Tensor:
        """``log p(x, u) - log pi_0(u)``: d log f_beta / d beta."""
        return self.log_target - self.log_start

    def where(self, mask: torch.Tensor, other: "PathState") -> "PathState":
        """``other`` where ``mask`` (C, N) is true, else self."""
        m = mask.unsqueeze(-1)
        return PathState(
            torch.where(m, other.u, self.u),
            torch.where(mask, other.log_start, self.log_start),
            torch.where(mask, other.log_target, self.log_target),
            torch.where(m, other.grad_start, self.grad_start),
            torch.where(m, other.grad_target, self.grad_target),
        )


def evaluate_path(densities: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
                  u: torch.Tensor) -> PathState:
    """Both log-densities at ``u`` and their gradients with respect to ``u``.

    :param densities: ``u -> (log pi_0(u), log p(x, u))``, each (C, N), differentiable in u.
    """
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        log_start, log_target = densities(u)
        grad_start, = torch.autograd.grad(log_start.sum(), u, retain_graph=True, allow_unused=True)
        grad_target, = torch.autograd.grad(log_target.sum(), u, allow_unused=True)
    zeros = torch.zeros_like(u)
    return PathState(
        u.detach(), log_start.detach(), log_target.detach(),
        zeros if grad_start is None else grad_start.detach(),
        zeros if grad_target is None else grad_target.detach(),
    )


def hmc_transition(
    densities: Callable, state: PathState, beta: float, step_size: torch.Tensor, num_leapfrog_steps: int,
) -> Tuple[PathState, torch.Tensor]:
    """One HMC transition leaving :math:`f_\\beta` invariant, for every chain separately.

    :param densities: as for :func:`evaluate_path`.
    :param PathState state: the current chains.
    :param float beta: the inverse temperature of the target :math:`f_\\beta`.
    :param torch.Tensor step_size: leapfrog step size, shape (N,) (one per datapoint).
    :param int num_leapfrog_steps: leapfrog steps per transition.
    :returns: ``(new state, acceptance probability (C, N))``.
    """
    eps = step_size.reshape(1, -1, 1)
    p = torch.randn_like(state.u)
    h0 = -state.log_f(beta) + 0.5 * p.pow(2).sum(-1)
    p = p + 0.5 * eps * state.grad_f(beta)
    proposal = state
    for step in range(num_leapfrog_steps):
        proposal = evaluate_path(densities, proposal.u + eps * p)
        if step < num_leapfrog_steps - 1:
            p = p + eps * proposal.grad_f(beta)
    p = p + 0.5 * eps * proposal.grad_f(beta)
    h1 = -proposal.log_f(beta) + 0.5 * p.pow(2).sum(-1)
    log_accept = (h0 - h1).clamp(max=0.0)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -float("inf")))
    accept = torch.rand_like(log_accept).log() < log_accept
    return state.where(accept, proposal), log_accept.exp()


def adapt_step_size(step_size: torch.Tensor, accept_prob: torch.Tensor, target: float,
                    gain: float = 1.0) -> torch.Tensor:
    """``step_size * exp(gain * (a - target))`` per datapoint, with ``a`` the mean acceptance
    probability of the given chains (``accept_prob`` is (C, N))."""
    return step_size * torch.exp(gain * (accept_prob.mean(0) - target))
