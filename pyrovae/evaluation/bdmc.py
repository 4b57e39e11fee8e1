"""Bidirectional Monte Carlo (BDMC): sandwiching ``log p(x)`` to check AIS.

On data simulated from the model, ``(x, z) ~ p(x, z)``, the exact ``z`` is a draw from the
posterior ``p(z | x)``. Forward AIS (prior -> posterior) gives a stochastic lower bound on
``log p(x)``; reverse AIS, started at the exact ``z`` and annealed posterior -> prior along
the same path, estimates :math:`1 / p(x)` without bias, so minus its log is a stochastic upper
bound. The gap between the two bounds the error of AIS with these settings on data like the
model's own, and shrinks to 0 as the number of intermediate distributions grows.

References

[1] Grosse, Ghahramani, Adams. Sandwiching the marginal likelihood using bidirectional
    Monte Carlo. arXiv:1511.02543
[2] Wu, Burda, Salakhutdinov, Grosse. On the Quantitative Analysis of Decoder-Based
    Generative Models. arXiv:1611.04273
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import pyro
import torch

from pyrovae.evaluation.ais import (DEFAULT_AIS_STEPS, AISEstimate, _check, _densities, _summarize, anneal,
                                    schedule)
from pyrovae.evaluation.log_likelihood import eval_mode
from pyrovae.data.inputs import eval_split
from pyrovae.evaluation.latent_space import simulate
from pyrovae.infer.importance import log_mean_exp
from tqdm.auto import tqdm


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on simulated data.

    :ivar AISEstimate lower: forward AIS (stochastic lower bounds on log p(x)).
    :ivar AISEstimate upper: reverse AIS from the exact latents (stochastic upper bounds).
    :ivar float gap: mean over datapoints of upper - lower, nats (AIS error is at most this).
    :ivar dict data: the simulated batch.
    """

    lower: AISEstimate
    upper: AISEstimate
    gap: float
    data: dict

    def as_dict(self) -> dict:
        return {"lower": self.lower.log_likelihood, "upper": self.upper.log_likelihood, "gap": self.gap,
                "num_datapoints": int(self.lower.per_datapoint.numel()), "num_steps": self.lower.num_steps,
                "num_chains": self.lower.num_chains, "start": self.lower.start}


def bdmc(
    model: Callable,
    data,
    num_steps: int = DEFAULT_AIS_STEPS,
    num_chains: int = 16,
    *,
    guide: Optional[Callable] = None,
    num_datapoints: Optional[int] = None,
    num_leapfrog_steps: int = 1,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    adapt_chains: int = 4,
    start: str = "prior",
    schedule_kind: str = "sigmoid",
    split: str = "test",
    data_dir=None,
    device=None,
    progress: bool = False,
) -> BDMCResult:
    """Sandwich ``log p(x)`` between forward and reverse AIS on data simulated from the model.

    ``data`` only gives the shapes (and any extra keys such as labels): ``x`` is redrawn
    from ``p(x, z)`` with the exact ``z`` kept. All datapoints are annealed in one batch.

    :param int num_datapoints: simulate this many datapoints (default: all rows of ``data``).
    :returns: :class:`BDMCResult`; the other parameters are those of :func:`ais_log_likelihood`.

    >>> from pyrovae.models import LinearGaussianVAE
    >>> result = bdmc(LinearGaussianVAE(3, 2), torch.zeros(4, 3), num_steps=100, num_chains=4)
    >>> result.gap < 1.0
    True
    """
    _check(num_steps, num_chains, num_leapfrog_steps, start, guide, schedule_kind)
    template = eval_split(data, split, data_dir, device)
    if num_datapoints is not None:
        template = {k: v[:num_datapoints] for k, v in template.items()}
    betas = schedule(num_steps, schedule_kind)
    options = dict(step_size=step_size, num_leapfrog_steps=num_leapfrog_steps, target_accept=target_accept,
                   adapt_chains=adapt_chains)
    settings = dict(num_steps=num_steps, num_chains=num_chains, num_leapfrog_steps=num_leapfrog_steps, start=start)
    bar = tqdm(disable=not progress, dynamic_ncols=True, total=2 * num_steps, desc=f"BDMC T={num_steps} C={num_chains}")
    with eval_mode(model, guide), pyro.validation_enabled(False), torch.no_grad():
        simulated, space, u_true = simulate(model, template)
        densities = _densities(space, guide, start)
        total = num_chains + adapt_chains
        u0 = space.sample_prior(total) if start == "prior" else space.sample_guide(guide, total)
        fwd, acc_f, eps_f = anneal(densities, u0, betas, bar=bar, **options)
        rev, acc_r, eps_r = anneal(densities, u_true.expand(total, -1, -1).clone(), betas, reverse=True,
                                   bar=bar, **options)
    bar.close()
    lower = _summarize([log_mean_exp(fwd, 0)], [fwd], [acc_f], [eps_f], settings)
    upper = _summarize([-log_mean_exp(rev, 0)], [rev], [acc_r], [eps_r],
                       {**settings, "reverse": True})
    gap = float((upper.per_datapoint - lower.per_datapoint).mean())
    return BDMCResult(lower=lower, upper=upper, gap=gap, data=simulated)
