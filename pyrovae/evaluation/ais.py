"""Annealed importance sampling (AIS) of ``log p(x)``.

For each datapoint, ``C`` chains move along the geometric path from a normalized start
density :math:`\\pi_0` (the prior ``p(z)``, or the guide ``q(z | x)``) to the unnormalized
posterior :math:`p(x, z)`,

.. math:: f_t(z) = \\pi_0(z)^{1 - \\beta_t}\\, p(x, z)^{\\beta_t},
          \\qquad 0 = \\beta_0 < \\beta_1 < \\dots < \\beta_T = 1,

with HMC transitions leaving each :math:`f_t` invariant (:mod:`pyrovae.evaluation.hmc`). The log-weight
of a chain is :math:`\\log w = \\sum_{t=1}^T (\\beta_t - \\beta_{t-1})
[\\log p(x, z_{t-1}) - \\log \\pi_0(z_{t-1})]`, and :math:`\\log \\frac1C \\sum_c w_c` is a
stochastic lower bound on :math:`\\log p(x)` (Wu et al.; unbiased in :math:`w`).

:mod:`pyrovae.evaluation.bdmc` runs the same chains in reverse to check the accuracy of AIS.

References

[1] Neal. Annealed Importance Sampling. arXiv:physics/9803008
[2] Wu, Burda, Salakhutdinov, Grosse. On the Quantitative Analysis of Decoder-Based
    Generative Models. arXiv:1611.04273
[3] Grosse, Ghahramani, Adams. Sandwiching the marginal likelihood using bidirectional
    Monte Carlo. arXiv:1511.02543 (the sigmoid schedule)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import pyro
import torch

from pyrovae.evaluation.log_likelihood import eval_mode
from pyrovae.evaluation.hmc import adapt_step_size, evaluate_path, hmc_transition
from pyrovae.data.inputs import eval_split
from pyrovae.evaluation.latent_space import LatentSpace
from tqdm.auto import tqdm
from pyrovae.infer.importance import batch_size_of, log_mean_exp, mean_and_stderr

SCHEDULES = ("sigmoid", "linear")
STARTS = ("prior", "guide")


def schedule(num_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    """Inverse temperatures :math:`\\beta_0 = 0, \\dots, \\beta_T = 1` (float64, length T+1).

    ``sigmoid`` (Grosse et al.): :math:`\\tilde\\beta_t = \\sigma(\\delta (2t/T - 1))`,
    rescaled to [0, 1]: dense near both ends, where the log-weights change fastest.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if kind == "linear":
        return torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if kind == "sigmoid":
        s = torch.sigmoid(torch.linspace(-delta, delta, num_steps + 1, dtype=torch.float64))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")


@dataclass
class AISEstimate:
    """AIS estimates over a data set (``reverse``: upper bounds from reverse AIS).

    :ivar float log_likelihood: mean over datapoints of the per-datapoint estimates, nats.
    :ivar float stderr: standard error of that mean over datapoints.
    :ivar torch.Tensor per_datapoint: (N,) log-mean-exp of the chains' weights (forward), or
        minus the log-mean-exp of the reverse weights (reverse).
    :ivar torch.Tensor log_weights: (C, N) the chains' log-weights.
    :ivar float accept_rate: mean HMC acceptance probability.
    :ivar torch.Tensor step_size: (N,) final leapfrog step sizes.
    """

    log_likelihood: float
    stderr: float
    per_datapoint: torch.Tensor
    log_weights: torch.Tensor
    accept_rate: float
    step_size: torch.Tensor
    num_steps: int
    num_chains: int
    num_leapfrog_steps: int
    start: str
    reverse: bool = False

    def as_dict(self) -> dict:
        return {
            "log_likelihood": self.log_likelihood, "stderr": self.stderr,
            "num_datapoints": int(self.per_datapoint.numel()), "num_steps": self.num_steps,
            "num_chains": self.num_chains, "num_leapfrog_steps": self.num_leapfrog_steps,
            "start": self.start, "accept_rate": self.accept_rate, "reverse": self.reverse,
        }


def _summarize(per_datapoint, log_w, accepts, step_size, settings) -> AISEstimate:
    ll = torch.cat(per_datapoint).double().cpu()
    return AISEstimate(*mean_and_stderr(ll), ll, torch.cat(log_w, 1).cpu(),
                       float(sum(accepts) / max(len(accepts), 1)), torch.cat(step_size).cpu(), **settings)


def _densities(space: LatentSpace, guide, start: str) -> Callable:
    if start == "prior":
        def densities(u):
            log_prior, log_lik = space.log_density(u)
            return log_prior, log_prior + log_lik
    else:
        def densities(u):
            log_prior, log_lik = space.log_density(u)
            return space.guide_log_density(guide, u), log_prior + log_lik
    return densities


def anneal(densities: Callable, u: torch.Tensor, betas: torch.Tensor, *, step_size: float = 0.05,
           num_leapfrog_steps: int = 1, target_accept: float = 0.65, adapt_chains: int = 4,
           reverse: bool = False, bar=None):
    """Run AIS chains from ``u`` (C, N, D) along ``betas`` (forward, or backward if ``reverse``).

    Forward, ``u`` must be drawn from :math:`\\pi_0`; reversed, from :math:`p(z | x)`. The first
    ``adapt_chains`` chains only tune each datapoint's step size toward ``target_accept`` and
    are dropped from the estimate: the step sizes the other chains see then do not depend on
    their own past, which keeps the weights exactly unbiased (adapting on the estimating
    chains themselves biases log p(x) slightly upward; ``adapt_chains=0`` does that).

    :returns: ``(log_w (C - adapt_chains, N) float64, mean acceptance probability, step sizes (N,))``;
        the forward ``log_w`` estimates ``log p(x)``, the reverse one ``-log p(x)``.
    """
    if not 0 <= adapt_chains < u.shape[0]:
        raise ValueError(f"adapt_chains must be in [0, {u.shape[0]}), got {adapt_chains}")
    state = evaluate_path(densities, u)
    eps = torch.full((u.shape[1],), float(step_size), dtype=u.dtype, device=u.device)
    log_w = torch.zeros(u.shape[:2], dtype=torch.float64, device=u.device)
    num_steps = len(betas) - 1
    order = range(num_steps, 0, -1) if reverse else range(1, num_steps + 1)
    accept_sum, transitions = 0.0, 0
    for t in order:
        now, nxt = (float(betas[t]), float(betas[t - 1])) if reverse else (float(betas[t - 1]), float(betas[t]))
        log_w += (nxt - now) * state.log_ratio.double()        # log f_next(z) - log f_now(z)
        if (t > 1) if reverse else (t < num_steps):
            state, accept = hmc_transition(densities, state, nxt, eps, num_leapfrog_steps)
            eps = adapt_step_size(eps, accept[:adapt_chains] if adapt_chains else accept, target_accept)
            accept_sum += float(accept[adapt_chains:].mean())
            transitions += 1
        if bar is not None:
            bar.update(1)
    return log_w[adapt_chains:], accept_sum / max(transitions, 1), eps


def _check(num_steps, num_chains, num_leapfrog_steps, start, guide, schedule_kind):
    for name, value in (("num_steps", num_steps), ("num_chains", num_chains),
                        ("num_leapfrog_steps", num_leapfrog_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if start == "guide" and guide is None:
        raise ValueError("start='guide' anneals from q(z | x): pass the guide")
    if schedule_kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule_kind!r}; choose one of {SCHEDULES}")


#: The default number of intermediate distributions T. On the MNIST VAE (784-200-200-50), BDMC on
#: 100 images simulated from the model leaves a gap of 0.31 ± 0.08 nats at T = 1000 and
#: 0.03 ± 0.03 at T = 3000, and on 500 test images T = 3000 is 0.12 ± 0.02 nats above T = 1000
#: (docs/evaluation.md#measured-mnist); at T = 1000 the estimate is still short.
DEFAULT_AIS_STEPS = 3000


def ais_log_likelihood(
    model: Callable,
    guide: Optional[Callable],
    data,
    num_steps: int = DEFAULT_AIS_STEPS,
    num_chains: int = 16,
    *,
    num_leapfrog_steps: int = 1,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    adapt_chains: int = 4,
    start: str = "prior",
    schedule_kind: str = "sigmoid",
    batch_size: int = 100,
    split: str = "test",
    data_dir=None,
    device=None,
    progress: bool = False,
) -> AISEstimate:
    """Annealed importance sampling estimate of ``log p(x)`` per datapoint, in nats.

    :param model: a Pyro model with continuous latents inside the data plate.
    :param guide: the guide (needed only for ``start="guide"``; may be None).
    :param data: a tensor, a dict of tensors, a DataSet or a data set name (its ``split``).
    :param int num_steps: T, the number of intermediate distributions (default
        :data:`DEFAULT_AIS_STEPS`, 3000).
    :param int num_chains: C, AIS chains per datapoint (batched).
    :param int num_leapfrog_steps: leapfrog steps per HMC transition (1 is Langevin-like; on small
        problems more temperatures beat longer trajectories at the same cost).
    :param float step_size: initial leapfrog step size (then adapted per datapoint).
    :param float target_accept: the acceptance rate the step size is adapted toward.
    :param int adapt_chains: extra chains per datapoint that only adapt the step size (their
        weights are not used, which keeps the estimate unbiased; see :func:`anneal`).
    :param str start: ``"prior"`` (the standard choice) or ``"guide"`` (fewer steps needed when
        q is good, but relies on the guide's density at arbitrary points).
    :param str schedule_kind: ``"sigmoid"`` or ``"linear"``.
    :param int batch_size: datapoints annealed together (memory: C x batch_size chains).
    :returns: :class:`AISEstimate`.

    >>> from pyrovae.models import LinearGaussianVAE
    >>> model = LinearGaussianVAE(x_dim=3, z_dim=2)
    >>> x = torch.randn(4, 3)
    >>> est = ais_log_likelihood(model, None, x, num_steps=200, num_chains=8)
    >>> abs(est.log_likelihood - model.log_marginal(x).mean().item()) < 0.2
    True
    """
    _check(num_steps, num_chains, num_leapfrog_steps, start, guide, schedule_kind)
    data = eval_split(data, split, data_dir, device)
    n = batch_size_of(data)
    betas = schedule(num_steps, schedule_kind)
    per, log_ws, accepts, eps = [], [], [], []
    bar = tqdm(disable=not progress, dynamic_ncols=True, total=num_steps * math.ceil(n / batch_size), desc=f"AIS T={num_steps} C={num_chains}")
    with eval_mode(model, guide), pyro.validation_enabled(False), torch.no_grad():
        for lo in range(0, n, batch_size):
            batch = {k: v[lo:lo + batch_size] for k, v in data.items()}
            space = LatentSpace(model, batch)
            total = num_chains + adapt_chains
            u = space.sample_prior(total) if start == "prior" else space.sample_guide(guide, total)
            log_w, accept, step = anneal(_densities(space, guide, start), u, betas, step_size=step_size,
                                         num_leapfrog_steps=num_leapfrog_steps, target_accept=target_accept,
                                         adapt_chains=adapt_chains, bar=bar)
            per.append(log_mean_exp(log_w, 0))
            log_ws.append(log_w)
            accepts.append(accept)
            eps.append(step)
    bar.close()
    return _summarize(per, log_ws, accepts, eps, dict(num_steps=num_steps, num_chains=num_chains,
                                                         num_leapfrog_steps=num_leapfrog_steps, start=start))
