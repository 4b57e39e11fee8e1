"""What a guide of the suite is: :class:`Guide` declares, once, every hook the suite reads of a
guide, with its default; :class:`EncoderGuide` is the shape most guides share (``encode(x)``
gives q(z | x), sampled inside the plate over the batch) with the options every encoder shares.

The model's half of the contract is :class:`pyrovae.models.base.Model`.

>>> Guide.model_name, Guide.objective_name, Guide.has_density
('vae', 'elbo', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import pyro
import torch
from pyro.nn import PyroModule

from pyrovae.nn import MLP, check_positive
from pyrovae.registry import Configurable


class Guide(Configurable, PyroModule):
    """The base of the suite's guides: the hooks the suite reads, with their defaults.

    Subclass it (or :class:`EncoderGuide`), declare ``Options`` and write ``forward(**batch)``,
    which samples every latent site of the model under the same name inside the plate over the
    batch (docs/writing-a-pair.md). A guide that does not derive from this class is read the
    same way, each hook looked up with this class's default.
    """

    #: the model the guide pairs with when ``pyrovae fit --guide NAME`` names no ``--model``
    #: (and in the contract tests)
    model_name: ClassVar[str] = "vae"

    #: the objective ``fit`` and ``pyrovae fit`` use for the pair when none is named
    #: (``"enum"`` for a guide that enumerates a discrete latent, ``"stein"`` for particles)
    objective_name: ClassVar[str] = "elbo"

    #: whether q(z | x) has a density to weigh samples with: False for a guide that
    #: enumerates a site rather than samples it, whose pair then gets no IWAE bound or
    #: importance-sampled log-likelihood
    has_density: ClassVar[bool] = True

    #: whether KL(q(z | x) || p(z)) has a closed form for the suite's standard Normal prior
    #: (a diagonal Normal guide): only then does a model's ``default_objective`` of
    #: ``meanfield`` apply (:func:`objective_for`); other guides keep ``elbo``
    closed_form_kl: ClassVar[bool] = False

    #: False where the pair's training step reads tensor values on the host by design (the sentence
    #: encoder's one sync for the batch's longest sentence): fit then runs its steps eagerly
    #: without trying to record them for the CPU replay, and without the replay's fallback warning,
    #: which is meant for a user's own program (:func:`pyrovae.training.replay.replays_step`)
    replays_step: ClassVar[bool] = True

    def bind_model(self, model) -> None:
        """Read what the guide needs of the model it is paired with (the ladder guide shares
        the model's top-down network; DRAW's guide its decoder): called once by
        :func:`pyrovae.registry.pair_guide` wherever the suite builds a pair by name
        (``pyrovae fit``, ``load_run``). The default reads nothing."""


def model_name_of(guide) -> str:
    """The model a guide (class or instance) pairs with: its ``model_name``, else :attr:`Guide.model_name`."""
    return getattr(guide, "model_name", None) or Guide.model_name


def objective_name_of(guide) -> str:
    """The objective a guide (class or instance) is fit with by default: its ``objective_name``,
    else :attr:`Guide.objective_name`."""
    return getattr(guide, "objective_name", None) or Guide.objective_name


def objective_for(model, guide) -> str:
    """The objective a pair (classes or instances) is fit with when none is named: the guide's
    ``objective_name`` where it names one other than the plain ELBO (``enum``, ``stein``), else
    the model's ``default_objective`` where it declares one (``meanfield``, the closed-form KL,
    for ``vae`` and ``least-squares-vae``: docs/vae.md, docs/hidden-talents.md) and, for
    ``meanfield``, the guide's KL to the prior has a closed form (``closed_form_kl``: the
    diagonal Normal guide), else ``elbo``.

    >>> class Declares:
    ...     default_objective = "meanfield"
    >>> class Closed(Guide):
    ...     closed_form_kl = True
    >>> objective_for(Declares(), Closed), objective_for(Declares(), Guide), objective_for(None, Closed)
    ('meanfield', 'elbo', 'elbo')
    """
    own = objective_name_of(guide)
    if own != Guide.objective_name:
        return own
    declared = getattr(model, "default_objective", None)
    if not (isinstance(declared, str) and declared):
        return own
    if declared == "meanfield" and not getattr(guide, "closed_form_kl", False):
        return own  # no closed form: TraceMeanField_ELBO would sample the KL (or refuse the guide)
    return declared


def objective_options_for(model, name: str) -> dict:
    """The options the objective ``name`` gets from ``model`` (class or instance) when they are
    not given: those of its ``default_objective_options`` that the objective declares
    (``warmup_steps``, ``--kl-warmup``, is every suite objective's; an option the objective
    lacks is left out).

    >>> class Declares:
    ...     default_objective_options = {"warmup_steps": 1000, "free_bits": 0.5}
    >>> objective_options_for(Declares, "elbo"), objective_options_for(None, "elbo")
    ({'warmup_steps': 1000}, {})
    """
    import dataclasses

    from pyrovae.registry import get_objective

    declared = getattr(model, "default_objective_options", None) or {}
    options = getattr(get_objective(name), "Options", None)
    known = {f.name for f in dataclasses.fields(options)} if dataclasses.is_dataclass(options) else set()
    return {k: v for k, v in declared.items() if k in known}


def has_density(guide) -> bool:
    """Whether a guide (class or instance) has a density (:attr:`Guide.has_density`)."""
    return bool(getattr(guide, "has_density", Guide.has_density))


class EncoderGuide(Guide):
    """Base class of the suite's guides. It owns the options every encoder shares (declared
    once, in :class:`EncoderGuide.Options`), checks them and keeps ``x_dim``, ``z_dim`` and
    ``site`` as attributes, and builds ``self.encoder``, an MLP from x to
    :meth:`encoder_outputs` values (default ``2 * z_dim``: a location and a scale per
    coordinate; None builds none). A subclass adds its own options by extending ``Options``
    and implements ``encode(x)``, returning a distribution with batch shape ``(N,)``. The
    guide is then

    .. code-block:: python

        with pyro.plate("data", x.shape[0]):
            pyro.sample(self.site, self.encode(x))

    :param int x_dim: size of one (flattened) datapoint.
    :param int z_dim: latent dimension.
    :param tuple hidden_dims: encoder hidden widths (from x to z).
    :param str activation: encoder nonlinearity.
    :param str site: name of the latent sample site (the model/guide contract).
    """

    @dataclass
    class Options:
        x_dim: int
        z_dim: int = 20
        hidden_dims: Tuple[int, ...] = (200, 200)
        activation: str = "tanh"
        site: str = "z"

        def __post_init__(self):
            self.hidden_dims = tuple(self.hidden_dims)
            check_positive(x_dim=self.x_dim, z_dim=self.z_dim, hidden_dims=self.hidden_dims)  # () is fine: no hidden layer

    site = "z"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x_dim, self.z_dim, self.site = self.options.x_dim, self.options.z_dim, self.options.site
        outputs = self.encoder_outputs()
        if outputs is not None:
            self.encoder = self.mlp(outputs)

    def encoder_outputs(self) -> Optional[int]:
        """The width of ``self.encoder``'s output (None: build no encoder)."""
        return 2 * self.z_dim

    def mlp(self, out_dim: int) -> MLP:
        """The encoder network ``x -> out_dim`` of the shared options (hidden widths, activation)."""
        return MLP(self.x_dim, self.options.hidden_dims, out_dim, self.options.activation)

    def encode(self, x: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **kwargs):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.encode(x))
