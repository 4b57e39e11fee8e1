"""Modified Bessel functions of the first kind, in log space, for any order and argument.

The von Mises-Fisher normalizer on :math:`S^{d-1}` needs :math:`\\log I_\\nu(\\kappa)` with
:math:`\\nu = d/2 - 1`; its mean length needs the ratio
:math:`A(\\kappa) = I_{\\nu+1}(\\kappa) / I_\\nu(\\kappa)`. Both must stay finite and accurate
for :math:`\\kappa` up to :math:`10^4` and :math:`d` up to :math:`10^3`, where
:math:`I_\\nu(\\kappa)` itself overflows (large :math:`\\kappa`) or underflows (large
:math:`\\nu`, small :math:`\\kappa`) in double precision. Pure torch (no scipy, any device):

1. For an order :math:`\\mu \\ge 15` the uniform (Debye) asymptotic expansion [1, 10.41.3],

   .. math:: I_\\mu(\\mu z) \\sim \\frac{e^{\\mu \\eta}}{(2 \\pi \\mu)^{1/2} (1+z^2)^{1/4}}
             \\sum_{k \\ge 0} \\frac{u_k(t)}{\\mu^k}, \\quad
             t = (1+z^2)^{-1/2}, \\quad
             \\eta = (1+z^2)^{1/2} + \\log \\frac{z}{1 + (1+z^2)^{1/2}},

   is accurate to double precision uniformly in :math:`z > 0` with 11 terms; the
   polynomials :math:`u_k` are generated exactly from their recurrence [1, 10.41.9].
2. A smaller order :math:`\\nu` is reached from :math:`\\mu = \\nu + n` by the backward
   recurrence :math:`I_{k-1} = I_{k+1} + (2k/x) I_k` (stable: :math:`I` is the minimal
   solution). Multiplied by :math:`x` at each step it is linear with coefficients
   :math:`x` and :math:`2k \\ge 0`, so :math:`n` steps from :math:`(I_{\\mu+1}, I_\\mu) / I_\\mu =
   (\\rho_\\mu, 1)` give :math:`x^n (I_{\\nu+1}, I_\\nu) / I_\\mu = (a_1(x) \\rho_\\mu + a_0(x),\\
   b_1(x) \\rho_\\mu + b_0(x))` with polynomials of degree at most :math:`n` whose coefficients,
   computed once per order, are non-negative (Lommel polynomials): a sum of positive terms, no
   cancellation. They are summed as powers of :math:`x` (:math:`x < 1`) or of :math:`1/x` (the
   coefficients reversed), which neither overflow nor underflow; then
   :math:`\\rho_\\nu = I_{\\nu+1}/I_\\nu` is their quotient and
   :math:`\\log I_\\nu = \\log I_\\mu + \\log b - n \\log x`. A few tensor operations for any
   :math:`n`, where the step-by-step recurrence of the ratios took four per step.

Computation is in float64; results come back in the argument's dtype. Gradients use
:math:`\\partial_x \\log I_\\nu = \\rho_\\nu + \\nu / x` and
:math:`\\partial_x \\rho_\\nu = 1 - \\rho_\\nu^2 - (2\\nu+1) \\rho_\\nu / x`.

>>> import torch
>>> round(float(log_bessel_iv(0.5, torch.tensor(2.0))), 6)  # I_1/2(x) = sinh(x) sqrt(2/(pi x))
0.716002

References

[1] NIST Digital Library of Mathematical Functions, chapter 10 (https://dlmf.nist.gov/10.41).
[2] Amos. Computation of modified Bessel functions and their ratios. Math. Comp. 28 (1974).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import List, Tuple

import torch

DEBYE_ORDER = 15.0  # the expansion is used at orders >= this
DEBYE_TERMS = 11  # u_0 .. u_10


def _debye_polynomials(num_terms: int) -> List[List[Fraction]]:
    """Exact coefficients (in powers of t) of u_0 .. u_{num_terms-1}, from
    u_{k+1}(t) = t^2 (1 - t^2) u_k'(t) / 2 + int_0^t (1 - 5 s^2) u_k(s) ds / 8."""
    polys = [[Fraction(1)]]
    for _ in range(num_terms - 1):
        u = polys[-1]
        nxt = [Fraction(0)] * (len(u) + 3)
        for j, c in enumerate(u):
            if j:  # t^2 (1 - t^2) * j c t^(j-1) / 2
                nxt[j + 1] += c * j / 2
                nxt[j + 3] -= c * j / 2
            nxt[j + 1] += c / (8 * (j + 1))  # (1/8) int_0^t c s^j ds
            nxt[j + 3] -= 5 * c / (8 * (j + 3))  # -(5/8) int_0^t c s^(j+2) ds
        polys.append(nxt)
    return polys


_U = _debye_polynomials(DEBYE_TERMS)


@functools.lru_cache(maxsize=None)
def _series_coefficients(order: float) -> Tuple[float, ...]:
    """c_j with sum_k u_k(t) / order^k = sum_j c_j t^j (one polynomial in t per order; computed
    once per order)."""
    coeffs = [0.0] * len(_U[-1])
    for k, u in enumerate(_U):
        scale = order ** -k
        for j, c in enumerate(u):
            if c:
                coeffs[j] += float(c) * scale
    return tuple(coeffs)


@functools.lru_cache(maxsize=64)
def _debye_constants(orders: Tuple[float, ...], dtype, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The orders ``(P, 1)``, the series' coefficients ``(P, J)`` and ``log(2 pi order) / 2``
    ``(P, 1)`` as tensors (made once per orders, dtype and device)."""
    order = torch.tensor(orders, dtype=dtype, device=device).unsqueeze(-1)
    coeffs = torch.tensor([_series_coefficients(o) for o in orders], dtype=dtype, device=device)
    half_log = torch.tensor([0.5 * math.log(2 * math.pi * o) for o in orders], dtype=dtype, device=device).unsqueeze(-1)
    return order, coeffs, half_log


def _debye_log_ive(orders: Tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    """log I_order(x) - x by the uniform expansion for each of ``orders`` (all >= DEBYE_ORDER),
    x float64 > 0 of any shape: ``(len(orders), *x.shape)``. The polynomial in ``t`` is summed
    as powers times coefficients (a few tensor operations for every order at once, not a
    Horner loop of 31 steps per order; the same sum to float64 rounding)."""
    shape = x.shape
    x = x.reshape(1, -1)
    order, coeffs, half_log = _debye_constants(orders, x.dtype, x.device)
    z = x / order
    root = torch.sqrt(1 + z * z)
    t = 1 / root
    # eta - z, written without cancellation: (root - z) + log(z / (1 + root))
    eta_minus_z = 1 / (root + z) + torch.log(z / (1 + root))
    # t^0 .. t^(J-1) by a running product (a float64 pow per entry cost more than the rest)
    powers = torch.cat([torch.ones_like(t).unsqueeze(-1),
                        t.unsqueeze(-1).expand(t.shape + (coeffs.shape[-1] - 1,)).cumprod(-1)], -1)  # (P, n, J)
    series = (powers * coeffs.unsqueeze(1)).sum(-1)
    value = order * eta_minus_z - half_log + 0.5 * torch.log(t) + torch.log(series)
    return value.reshape((len(orders),) + shape)


@functools.lru_cache(maxsize=64)
def _recurrence_tensors(top: float, n: int, dtype, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`_recurrence_coefficients` as a tensor, and reversed (made once per order, dtype and device)."""
    coeffs = torch.tensor(_recurrence_coefficients(top, n), dtype=dtype, device=device)
    return coeffs, coeffs.flip(0).contiguous()


@functools.lru_cache(maxsize=None)
def _recurrence_coefficients(top: float, n: int) -> Tuple[Tuple[float, ...], ...]:
    """The coefficients ``(n + 1, 4)``, in ascending powers of x, of ``a_1, a_0, b_1, b_0``:
    ``n`` steps of the backward recurrence times x, ``(a, b) -> (x b, x a + 2k b)`` for
    ``k = top, top - 1, ..., top - n + 1``, from ``(a, b) = (rho, 1)``. All are >= 0."""
    a1, a0, b1, b0 = [1.0], [0.0], [0.0], [1.0]
    shift = lambda p: [0.0] + p  # noqa: E731  (times x)
    plus = lambda p, q: [u + w for u, w in zip(p + [0.0] * (len(q) - len(p)), q + [0.0] * (len(p) - len(q)))]  # noqa: E731
    for j in range(n):
        k = top - j
        a1, a0, b1, b0 = (shift(b1), shift(b0), plus(shift(a1), [2 * k * c for c in b1]),
                          plus(shift(a0), [2 * k * c for c in b0]))
    pad = lambda p: p + [0.0] * (n + 1 - len(p))  # noqa: E731
    return tuple(zip(*(pad(p) for p in (a1, a0, b1, b0))))


def _log_ive_and_ratio(v: float, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log I_v(x) - x, I_{v+1}(x) / I_v(x)) in float64, no autograd."""
    x = x.double().clamp_min(1e-300)
    n = max(0, math.ceil(DEBYE_ORDER - v))
    top = v + n
    log_ive_top, log_ive_next = _debye_log_ive((top, top + 1), x)
    ratio = torch.exp(log_ive_next - log_ive_top)  # rho_top
    if n == 0:
        return log_ive_top, ratio
    # x^n (I_{v+1}, I_v) / I_top = (a_1 rho + a_0, b_1 rho + b_0): sums of positive terms in powers
    # of u = x (x < 1) or u = 1 / x (the coefficients reversed: the sums are then x^-n times theirs)
    coeffs, reversed_coeffs = _recurrence_tensors(top, n, x.dtype, x.device)  # (n + 1, 4)
    small = x < 1
    u = torch.where(small, x, 1 / x)
    powers = torch.cat([torch.ones_like(u).unsqueeze(-1), u.unsqueeze(-1).expand(u.shape + (n,)).cumprod(-1)], -1)
    sums = torch.where(small.unsqueeze(-1), powers @ coeffs, powers @ reversed_coeffs)  # (..., 4)
    a1, a0, b1, b0 = sums.unbind(-1)
    b = b1 * ratio + b0
    log_ive = log_ive_top + torch.log(b) - torch.where(small, n * torch.log(x), torch.zeros_like(x))
    return log_ive, (a1 * ratio + a0) / b


def _log_ive_and_ratio_stepwise(v: float, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The former evaluation (the ratios' recurrence step by step), kept for the tests."""
    x = x.double().clamp_min(1e-300)
    n = max(0, math.ceil(DEBYE_ORDER - v))
    top = v + n
    log_ive_top, log_ive_next = _debye_log_ive((top, top + 1), x)
    ratio = torch.exp(log_ive_next - log_ive_top)  # rho_top
    log_ive = log_ive_top
    for j in range(n):  # rho_{top-1-j} from rho_{top-j}
        order = top - j
        ratio = x / (2 * order + x * ratio)
        log_ive = log_ive - torch.log(ratio)
    return log_ive, ratio


def _check_order(v) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError("the Bessel order must be one number (a float), not a tensor of orders")
        v = float(v)
    if not v >= 0:
        raise ValueError(f"the Bessel order must be >= 0, got {v}")
    return float(v)


def with_slope(value: torch.Tensor, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``value`` (computed without a graph) as a function of ``x`` whose derivative is ``slope``:
    ``value + slope * (x - x.detach())``, the same numbers as ``value`` (the added term is zero,
    taken as zero where ``slope`` is not finite) and the gradient ``grad * slope`` into ``x``, as
    a custom ``autograd.Function`` with that backward would give. Plain tensor operations, so a
    recording of the step (``make_fx``, :mod:`pyrovae.training.replay`) keeps the gradient,
    where it inlines an ``autograd.Function``'s forward and loses its backward. First-order
    only, as the functions it stands for (``once_differentiable``)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return value
    term = slope.detach() * (x - x.detach()).to(slope.dtype)  # in slope's dtype, as grad * slope was
    return value + torch.nan_to_num(term, nan=0.0, posinf=0.0, neginf=0.0).to(value.dtype)


def _log_ive_slope(v: float, x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """d/dx log Ive_v(x) = rho_v + v / x - 1."""
    return ratio + v / x - 1


def _ratio_slope(v: float, x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """d/dx rho_v(x) = 1 - rho_v^2 - (2 v + 1) rho_v / x."""
    return 1 - ratio * ratio - (2 * v + 1) * ratio / x


def _evaluate(v: float, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log Ive_v(x) and rho_v(x) in x's dtype, computed without a graph, and x detached."""
    plain = x.detach()
    with torch.no_grad():
        log_ive, ratio = _log_ive_and_ratio(v, plain)
    return log_ive.to(x.dtype), ratio.to(x.dtype), plain


def log_bessel_ive_and_ratio(v: float, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`log_bessel_ive` and :func:`bessel_ratio` of the same order and arguments from one
    evaluation (both differentiable), e.g. a von Mises-Fisher's normalizer and mean length.

    >>> x = torch.tensor([0.5, 3.0])
    >>> log_ive, ratio = log_bessel_ive_and_ratio(4.0, x)
    >>> bool(torch.allclose(log_ive, log_bessel_ive(4.0, x))), bool(torch.allclose(ratio, bessel_ratio(4.0, x)))
    (True, True)
    """
    v = _check_order(v)
    x = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not isinstance(x, torch.Tensor) else x
    log_ive, ratio, plain = _evaluate(v, x)
    return (with_slope(log_ive, x, _log_ive_slope(v, plain, ratio)),
            with_slope(ratio, x, _ratio_slope(v, plain, ratio)))


def log_bessel_ive(v: float, x: torch.Tensor) -> torch.Tensor:
    """:math:`\\log I_v(x) - x`, the log of the exponentially scaled Bessel function
    (``scipy.special.ive``), finite for every order ``v >= 0`` and ``x > 0``.

    :param float v: the order (one number).
    :param torch.Tensor x: positive arguments (any shape); differentiable.
    """
    v = _check_order(v)
    x = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not isinstance(x, torch.Tensor) else x
    log_ive, ratio, plain = _evaluate(v, x)
    return with_slope(log_ive, x, _log_ive_slope(v, plain, ratio))


def log_bessel_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    """:math:`\\log I_v(x)`, finite where :math:`I_v(x)` over- or underflows."""
    x = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not isinstance(x, torch.Tensor) else x
    return log_bessel_ive(v, x) + x


def bessel_ratio(v: float, x: torch.Tensor) -> torch.Tensor:
    """:math:`I_{v+1}(x) / I_v(x)` (in (0, 1)); for the vMF on :math:`S^{d-1}`,
    :math:`A_d(\\kappa)` = ``bessel_ratio(d / 2 - 1, kappa)``."""
    v = _check_order(v)
    x = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not isinstance(x, torch.Tensor) else x
    _, ratio, plain = _evaluate(v, x)
    return with_slope(ratio, x, _ratio_slope(v, plain, ratio))
