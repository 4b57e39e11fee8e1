"""Robust PCA by principal component pursuit: the reference a robust VAE is checked against.

Candès, Li, Ma and Wright [1] split a matrix into a low-rank and a sparse part by the convex
program

.. math:: \\min_{L, S}\\ \\|L\\|_* + \\lambda \\|S\\|_1 \\quad \\text{subject to} \\quad L + S = M,
          \\qquad \\lambda = 1 / \\sqrt{\\max(n, d)},

and prove that it recovers ``L`` and ``S`` exactly when ``L`` is incoherent and of low enough
rank and the support of ``S`` is random and not too dense. :func:`pcp` solves it by the
inexact augmented Lagrange multiplier method (Lin, Chen, Ma [2]; Algorithm 1 of [1]):
alternate a soft threshold of the entries (``S``), a soft threshold of the singular values
(``L``) and a dual ascent step on ``Y``, with the penalty ``mu`` raised geometrically.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> low = torch.randn(60, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 40, generator=g, dtype=torch.float64)
>>> sparse = torch.where(torch.rand(60, 40, generator=g, dtype=torch.float64) < 0.05, 10.0, 0.0)
>>> fit = pcp(low + sparse)
>>> bool((fit.low_rank - low).abs().max() < 1e-4), fit.rank
(True, 2)

References

[1] Candès, Li, Ma, Wright. Robust Principal Component Analysis? Journal of the ACM 58(3), 2011
[2] Lin, Chen, Ma. The Augmented Lagrange Multiplier Method for Exact Recovery of Corrupted
    Low-Rank Matrices. arXiv:1009.5055
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class PCPFit:
    """The solution of principal component pursuit.

    :ivar low_rank: ``L``, the low-rank part ``(n, d)``.
    :ivar sparse: ``S``, the sparse part ``(n, d)``.
    :ivar rank: the numerical rank of ``L`` (singular values above ``1e-6`` of the largest).
    :ivar iterations: ADMM iterations run.
    :ivar residual: ``||M - L - S||_F / ||M||_F`` at the end.
    """

    low_rank: torch.Tensor
    sparse: torch.Tensor
    rank: int
    iterations: int
    residual: float


def _shrink(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return x.sign() * (x.abs() - threshold).clamp_min(0)


def pcp(m: torch.Tensor, lam: Optional[float] = None, tol: float = 1e-7, max_iter: int = 1000,
        rho: float = 1.5) -> PCPFit:
    """Principal component pursuit of ``m`` ``(n, d)`` by the inexact augmented Lagrangian.

    :param lam: the weight of the l1 term; default ``1 / sqrt(max(n, d))`` (Candès et al.).
    :param tol: stop when ``||M - L - S||_F / ||M||_F < tol``.
    :param max_iter: at most this many iterations.
    :param rho: the factor by which the penalty ``mu`` grows each iteration.
    """
    if m.dim() != 2:
        raise ValueError(f"pcp needs a matrix (n, d), got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("pcp needs finite entries; drop or impute the NaN/inf ones first")
    m = m.double()
    n, d = m.shape
    lam = 1.0 / math.sqrt(max(n, d)) if lam is None else float(lam)
    norm_fro = float(torch.linalg.norm(m))
    if norm_fro == 0:
        return PCPFit(torch.zeros_like(m), torch.zeros_like(m), 0, 0, 0.0)
    norm_two = float(torch.linalg.matrix_norm(m, ord=2))
    y = m / max(norm_two, float(m.abs().max()) / lam)  # dual feasible start
    mu, mu_max = 1.25 / norm_two, 1.25 / norm_two * 1e7
    low, sparse = torch.zeros_like(m), torch.zeros_like(m)
    residual, iteration = 1.0, 0
    for iteration in range(1, max_iter + 1):
        sparse = _shrink(m - low + y / mu, lam / mu)
        u, s, vh = torch.linalg.svd(m - sparse + y / mu, full_matrices=False)
        s = (s - 1.0 / mu).clamp_min(0)
        keep = s > 0
        low = (u[:, keep] * s[keep]) @ vh[keep]
        gap = m - low - sparse
        y = y + mu * gap
        mu = min(mu * rho, mu_max)
        residual = float(torch.linalg.norm(gap)) / norm_fro
        if residual < tol:
            break
    singular = torch.linalg.svdvals(low)
    rank = int((singular > 1e-6 * singular[0]).sum()) if singular.numel() and singular[0] > 0 else 0
    return PCPFit(low, sparse, rank, iteration, residual)
