"""Amortized normalizing-flow guides: planar, radial and neural-spline flows.

An encoder maps :math:`x` to the parameters of a diagonal Gaussian and to a context vector
:math:`h(x)`; a chain of invertible maps, each conditioned on :math:`h(x)`, moves its draws:

.. math::
    z_0 = \\mu(x) + \\sigma(x) \\odot \\epsilon,\\ \\epsilon \\sim \\mathcal{N}(0, I), \\qquad
    z_T = f_T(\\cdot\\,; h) \\circ \\dots \\circ f_1(z_0; h),

    \\log q(z_T \\mid x) = \\log \\mathcal{N}(z_0; \\mu(x), \\operatorname{diag}\\sigma^2(x))
        - \\sum_{t=1}^T \\log \\left| \\det \\frac{\\partial f_t}{\\partial z_{t-1}} \\right|.

The flows are Pyro's conditional transforms (``ConditionalPlanar``, ``ConditionalRadial``,
``ConditionalSplineAutoregressive``) inside a ``TransformedDistribution``; this file adds the
encoder, the amortization and the guide body.

**Limitation of planar and radial flows.** They have no closed-form inverse. The density of
the guide's *own latest* draw is exact (Pyro caches each step's input by tensor identity),
which is all that training and importance sampling need; scoring any other value (a replayed
or copied tensor, ``Predictive`` draws) raises a ``NotImplementedError`` that says so. Spline
and IAF flows invert (at a cost of ``z_dim`` network passes per step).

References

[1] Rezende, Mohamed. Variational Inference with Normalizing Flows. arXiv:1505.05770
[2] Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. arXiv:1906.04032
[3] Kingma et al. Improving Variational Inference with Inverse Autoregressive Flow.
    arXiv:1606.04934
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Literal, Optional, Sequence, Tuple

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.distributions.conditional import ConditionalTransform
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from pyrovae.guides.base import EncoderGuide
from pyrovae.nn import MLP, check_positive
from pyrovae.nn import activation as make_activation
from pyrovae.registry import register_guide


class FlowDistribution(dist.TransformedDistribution):
    """A ``TransformedDistribution`` whose ``log_prob`` broadcasts values against its batch
    shape and explains what a flow without an inverse (planar, radial) cannot score, instead
    of Pyro's bare ``KeyError``."""

    def log_prob(self, value):
        # Pyro's conditional autoregressive networks expand the context to the value's batch
        # shape rather than broadcasting: give a value that only broadcasts against the batch
        # (e.g. (S, B, 1, z_dim) against (N,)) its full shape first. A fresh draw already has
        # it and is passed as is (its cached inverse is found by tensor identity).
        event_dim = len(self.event_shape)
        batch = value.shape[:value.dim() - event_dim]
        full = torch.broadcast_shapes(batch, self.batch_shape)
        if batch != full:
            value = value.expand(full + self.event_shape)
        try:
            return super().log_prob(value)
        except KeyError:
            raise NotImplementedError(
                "this flow has no inverse, so log q(z|x) is known only for the guide's own "
                "latest draw (the very tensor it returned). Score replayed or copied values "
                "with an invertible guide ('iaf', 'spline', 'fullcov', 'diag')."
            ) from None


class ContextNet(nn.Module):
    """An MLP from the context ``h`` to a tuple of flow parameters of sizes ``param_dims``.

    :param int context_dim: size of ``h``.
    :param tuple hidden_dims: hidden widths (empty: a linear map).
    :param list param_dims: sizes of the returned tensors.
    :param str activation: nonlinearity.
    """

    def __init__(self, context_dim: int, hidden_dims: Sequence[int], param_dims: Sequence[int],
                 activation: str = "tanh"):
        super().__init__()
        self.param_dims = list(param_dims)
        self.net = MLP(context_dim, tuple(hidden_dims), sum(self.param_dims), activation)

    def forward(self, h: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.net(h).split(self.param_dims, dim=-1))


class AmortizedFlowGuide(EncoderGuide):
    """Base class: an encoder ``x -> (loc, scale, h)`` and ``num_flows`` conditional flow steps.

    Subclasses implement :meth:`make_flow` (one step, a ``ConditionalTransformModule`` or a
    plain ``Transform``; their own options are in ``self.options``), may set
    ``reverse_between = True`` to reverse the coordinate order between steps and
    ``autoregressive = True`` for steps built on a masked autoregressive network (whose
    widths default to two layers of ``4 * z_dim`` and must each be at least ``z_dim``).

    The options of :class:`~pyrovae.guides.base.EncoderGuide`, and

    :param int num_flows: number of flow steps T.
    :param int context_dim: size of the context h(x) (default ``z_dim``).
    :param tuple flow_hidden_dims: hidden widths of each step's network.
    """

    reverse_between = False
    autoregressive = False

    @dataclass
    class Options(EncoderGuide.Options):
        num_flows: int = 2
        context_dim: Optional[int] = None
        flow_hidden_dims: Optional[Tuple[int, ...]] = None

        def __post_init__(self):
            super().__post_init__()
            check_positive(num_flows=self.num_flows)
            if self.context_dim is not None:
                check_positive(context_dim=self.context_dim)
            if self.flow_hidden_dims is not None:
                self.flow_hidden_dims = tuple(self.flow_hidden_dims)
                if self.flow_hidden_dims:
                    check_positive(flow_hidden_dims=self.flow_hidden_dims)

    def encoder_outputs(self) -> int:
        o = self.options
        self.context_dim = self.z_dim if o.context_dim is None else o.context_dim
        return 2 * self.z_dim + self.context_dim

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.num_flows = o.num_flows
        self.activation_name = o.activation
        if self.autoregressive:
            self.flow_hidden_dims = _autoregressive_widths(o.flow_hidden_dims, self.z_dim)
        else:
            self.flow_hidden_dims = tuple(o.flow_hidden_dims or ())
        self.flows = nn.ModuleList([self.make_flow(t) for t in range(self.num_flows)])
        self.register_buffer("reverse_index", torch.arange(self.z_dim - 1, -1, -1))

    @property
    def flow_options(self) -> dict:
        """The subclass's own options (those beyond :class:`AmortizedFlowGuide.Options`), by name."""
        shared = {f.name for f in fields(AmortizedFlowGuide.Options)}
        return {f.name: getattr(self.options, f.name) for f in fields(self.options) if f.name not in shared}

    def make_flow(self, t: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def transforms(self, h: torch.Tensor) -> List[dist.transforms.Transform]:
        """The flow steps conditioned on the context ``h`` (a fresh list per call: each
        conditioned step caches its latest input/output pair)."""
        steps = []
        for t, flow in enumerate(self.flows):
            if t > 0 and self.reverse_between:
                steps.append(T.Permute(self.reverse_index))
            steps.append(flow.condition(h) if isinstance(flow, ConditionalTransform) else flow)
        return steps

    def encode_base(self, x: torch.Tensor):
        """``(q_0(z_0 | x), h(x))``: the diagonal Gaussian before the flow, and the context."""
        loc, raw_scale, h = self.encoder(x).split([self.z_dim, self.z_dim, self.context_dim], dim=-1)
        base = dist.Normal(loc, F.softplus(raw_scale) + 1e-5).to_event(1)
        return base, h

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``."""
        base, h = self.encode_base(x)
        return FlowDistribution(base, self.transforms(h))


class ContextFlowGuide(AmortizedFlowGuide):
    """Planar and radial flows: each step is one of Pyro's conditional transforms
    (``transform``) whose parameters, of sizes ``param_dims(z_dim)``, an MLP computes from
    :math:`h(x)` (:class:`ContextNet`; ``flow_hidden_dims`` are its widths, empty: linear).
    Neither has an inverse: see the module's note."""

    @dataclass
    class Options(AmortizedFlowGuide.Options):
        num_flows: int = 4
        flow_hidden_dims: Tuple[int, ...] = ()

    transform = None  # T.ConditionalPlanar or T.ConditionalRadial

    @staticmethod
    def param_dims(z_dim: int) -> List[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_flow(self, t):
        return self.transform(ContextNet(self.context_dim, self.flow_hidden_dims, self.param_dims(self.z_dim),
                                         self.activation_name))


@register_guide("planar")
class PlanarFlowGuide(ContextFlowGuide):
    """Amortized planar flow (Rezende & Mohamed): each step, with parameters
    :math:`(u, w, b)` computed from :math:`h(x)`,

    .. math:: f(z) = z + \\hat u\\, \\tanh(w^\\top z + b), \\qquad
              \\log|\\det J| = \\log|1 + \\hat u^\\top \\psi(z)|,\\ \\
              \\psi(z) = (1 - \\tanh^2(w^\\top z + b))\\, w,

    with :math:`\\hat u` the projection that keeps :math:`w^\\top \\hat u \\ge -1`
    (invertibility). No inverse: see the module's note. Options: see
    :class:`AmortizedFlowGuide` (``num_flows`` default 4; ``flow_hidden_dims``, default
    empty, are the widths of the map h -> (u, w, b)).

    >>> guide = PlanarFlowGuide(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> guide.encode(torch.zeros(3, 6)).rsample().shape
    torch.Size([3, 2])
    """

    transform, param_dims = T.ConditionalPlanar, staticmethod(lambda z_dim: [1, z_dim, z_dim])


@register_guide("radial")
class RadialFlowGuide(ContextFlowGuide):
    """Amortized radial flow (Rezende & Mohamed): each step, with :math:`(z_0, \\alpha, \\beta)`
    computed from :math:`h(x)` (:math:`\\alpha > 0`, :math:`\\beta \\ge -\\alpha`),

    .. math:: f(z) = z + \\beta\\, h(\\alpha, r)\\,(z - z_0),\\quad r = \\lVert z - z_0\\rVert,\\
              h = \\frac{1}{\\alpha + r},

    .. math:: \\log|\\det J| = (d - 1)\\log(1 + \\beta h) + \\log(1 + \\beta h + \\beta h' r).

    No inverse: see the module's note. Options: see :class:`AmortizedFlowGuide`
    (``num_flows`` default 4; ``flow_hidden_dims``, default empty, are the widths of the map
    h -> (z_0, alpha, beta)).

    >>> guide = RadialFlowGuide(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> guide.encode(torch.zeros(3, 6)).rsample().shape
    torch.Size([3, 2])
    """

    transform, param_dims = T.ConditionalRadial, staticmethod(lambda z_dim: [z_dim, 1, 1])


@register_guide("spline")
class SplineFlowGuide(AmortizedFlowGuide):
    """Amortized neural spline flow (Durkan et al.): each step is a monotonic
    rational-quadratic (or rational-linear) spline per coordinate on ``[-bound, bound]``
    (identity outside), whose knots come from a masked autoregressive network of
    :math:`(z_{<i}, h(x))`:

    .. math:: z'_i = s_i(z_i;\\ \\theta_i(z_{<i}, h)), \\qquad
              \\log|\\det J| = \\sum_i \\log s_i'(z_i),

    with the coordinate order reversed between steps. It inverts (one network pass per
    coordinate), so replayed values can be scored.

    The options of :class:`AmortizedFlowGuide` (``flow_hidden_dims``: widths of each step's
    autoregressive network, each >= ``z_dim``; default two layers of ``4 * z_dim``), and

    :param int count_bins: spline segments per coordinate.
    :param float bound: half-width of the spline's box.
    :param str order: ``quadratic`` (Durkan et al.) or ``linear`` (Dolatabadi et al.).

    >>> guide = SplineFlowGuide(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> guide.encode(torch.zeros(3, 6)).rsample().shape
    torch.Size([3, 2])
    """

    reverse_between = True
    autoregressive = True

    @dataclass
    class Options(AmortizedFlowGuide.Options):
        count_bins: int = 8
        bound: float = 3.0
        order: Literal["linear", "quadratic"] = "quadratic"

        def __post_init__(self):
            check_positive(count_bins=self.count_bins)
            if not self.bound > 0:
                raise ValueError(f"bound must be positive, got {self.bound}")
            super().__post_init__()

    def make_flow(self, t):
        bins, bound, order = self.options.count_bins, float(self.options.bound), self.options.order
        param_dims = [bins, bins, bins - 1] + ([bins] if order == "linear" else [])
        arn = ConditionalAutoRegressiveNN(
            self.z_dim, self.context_dim, list(self.flow_hidden_dims), param_dims=param_dims,
            permutation=torch.arange(self.z_dim), nonlinearity=make_activation(self.activation_name),
        )
        return T.ConditionalSplineAutoregressive(self.z_dim, arn, count_bins=bins, bound=bound, order=order)


def _autoregressive_widths(flow_hidden_dims, z_dim: int) -> Tuple[int, ...]:
    """Hidden widths of a masked autoregressive network: default two layers of ``4 * z_dim``;
    each must be at least ``z_dim`` (else some coordinate could not see its predecessors)."""
    widths = (4 * z_dim, 4 * z_dim) if flow_hidden_dims is None else tuple(flow_hidden_dims)
    if not widths or any(w < z_dim for w in widths):
        raise ValueError(
            f"flow_hidden_dims {widths} must be non-empty with every width >= z_dim = {z_dim} "
            "(a masked autoregressive network needs that many units per layer)"
        )
    return widths
