"""The mean of a posterior, exact where the distribution knows it: what the monitors, the
latent-space figures and the data sets of learned features (:mod:`pyrovae.data.features`)
read as a datapoint's code."""

from __future__ import annotations

import pyro.distributions as dist
import torch

__all__ = ["posterior_mean"]


def posterior_mean(q: dist.Distribution, num_samples: int = 64) -> torch.Tensor:
    """``E_q[z]`` (N, z_dim): exact where the distribution knows its mean, else Monte Carlo.

    >>> posterior_mean(dist.Normal(torch.ones(2, 3), 1.0).to_event(1)).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    try:
        mean = q.mean
        if torch.isfinite(mean).all():
            return mean
    except NotImplementedError:
        pass
    return q.sample((num_samples,)).mean(0)
