"""What a model of the suite is: :class:`Model` declares, once, every hook the suite reads of a
model, with its default and what it is for; and the pieces both halves of a pair share.

A model is a Pyro program, ``forward(**batch)``, over the batch's named tensors (the three rules
of docs/writing-a-pair.md). The rest is optional, and each hook has a default that does the
right thing for a VAE over flat rows ``x``:

==================  ======================================  =======================================
hook                default                                 read by
==================  ======================================  =======================================
``Options``         (required) a dataclass of the options   the CLI flags, ``pyrovae list``,
                    (:class:`~pyrovae.registry.Configurable`) run.json, ``load_run``
sizes               ``x_dim`` (and ``y_dim``,               filled in from the data set when the
(:data:`FILLED`)    ``num_classes``, ``vocab_size``)        user does not set them
                    are options the data fills in
``guide_name``      ``"diag"``                              ``pyrovae fit`` without ``--guide``
``forward(...,      draw ``num_samples`` fresh datapoints   ``pyrovae sample``, the figures
num_samples=)``     when the data is left out
                    (:meth:`Model.batch_size`; p(z) =
                    N(0, I): :class:`StandardNormalPrior`)
``example_batch``   binary ``x`` (and ``y`` for a           the contract tests and first-step
                    conditional model)                      checks
``cannot_sample``   ``None``: ``forward(num_samples=)``     ``pyrovae sample``
                    draws x ~ p(x)
``sample(n)``       absent; where present, x ~ p(x) on the  ``pyrovae sample``, samples.png
                    data's scale (a ``mean=True`` default   (:mod:`pyrovae.evaluation.sampling`)
                    shows the mean of p(x | z))
``sequential_``     ``False``; ``True``: a draw takes one   fit and diagnose leave samples.png
``sampling``        pass per pixel (``pixelcnn-vae``)        to ``pyrovae sample``
``likelihoods``     ``None``; the ``likelihood`` option's   ``pyrovae fit``: 8-bit images get
                    choices                                 ``logistic-mixture`` where listed
``init_from_data``  ``None``: no data-dependent             ``fit(init="burda")``, the default
                    initialisation                          where defined
``default_init``    ``None``: ``burda`` with                fit's and the CLI's default init
                    ``init_from_data``, else ``torch``      (:func:`pyrovae.nn.default_init`)
``default_lr``      ``None``: 1e-3                          fit's and the CLI's default Adam
                                                            rate (:func:`~pyrovae.training.fit.default_lr`)
``default_``        ``None``: the guide's                   fit's and the CLI's objective where
``objective``       ``objective_name``                      the guide names only ``elbo``
                                                            (:func:`~pyrovae.guides.base.objective_for`)
``data_plate``      ``None``: the outermost plate           the importance core
==================  ======================================  =======================================

Registration is ``@register_model("name")`` on the class, in a module that is imported: the
built-ins are imported by ``models/__init__.py`` (one line per module), your own by
``pyrovae COMMAND --import yourmodule`` or an entry point of the group ``pyrovae.plugins``.
A guide's hooks (``model_name``, ``objective_name``, ``has_density``, ``closed_form_kl``, ``bind_model``) are
declared the same way by :class:`pyrovae.guides.base.Guide`.

>>> from dataclasses import dataclass
>>> import pyro.distributions as dist
>>> class Tiny(StandardNormalPrior, Model):
...     @dataclass
...     class Options:
...         x_dim: int
...         z_dim: int = 2
...     def __init__(self, *args, **kwargs):
...         super().__init__(*args, **kwargs)
...         self.standard_normal_prior_(self.options.z_dim)
...         self.decoder = torch.nn.Linear(self.options.z_dim, self.options.x_dim)
...     def forward(self, x=None, num_samples=None):
...         with pyro.plate("data", self.batch_size(x, num_samples)):
...             z = pyro.sample("z", self.prior(self.batch_size(x, num_samples)))
...             return pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)
>>> model = Tiny(x_dim=5)
>>> model.guide_name, model.init_from_data, model(num_samples=3).shape
('diag', None, torch.Size([3, 5]))
>>> model.example_batch(4)["x"].shape
torch.Size([4, 5])
"""

from __future__ import annotations

import inspect
from typing import Callable, ClassVar, Optional, Tuple

import pyro  # noqa: F401  (the examples below use it)
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyrovae.registry import Configurable

__all__ = ["FILLED", "Model", "StandardNormalPrior", "broadcast_cat", "guide_name_of"]

#: the options a data set fills in when the user does not set them (the sizes of its rows)
FILLED = ("x_dim", "y_dim", "num_classes", "vocab_size")


class Model(Configurable, PyroModule):
    """The base of the suite's models: the hooks the suite reads, with their defaults.

    Subclass it, declare ``Options`` (see :class:`~pyrovae.registry.Configurable`), build the
    networks in ``__init__`` and write :meth:`forward`; override a hook only where the default
    does not fit. A model that does not derive from this class is read the same way (each hook
    looked up with this class's default), so plain ``Configurable`` classes and functions still
    work.
    """

    #: the guide ``pyrovae fit --model NAME`` pairs the model with when no ``--guide`` is given
    guide_name: ClassVar[str] = "diag"

    #: why ``pyrovae sample`` cannot draw x ~ p(x) from the model on its own (one line, e.g. "a
    #: conditional model: p(y | x) needs an input x ..."); ``None``: it can, by
    #: ``forward(num_samples=)`` (:mod:`pyrovae.evaluation.sampling`)
    cannot_sample: ClassVar[Optional[str]] = None

    #: draws take one network pass per pixel (an autoregressive decoder): ``pyrovae fit`` and
    #: ``diagnose`` leave samples.png to ``pyrovae sample``
    sequential_sampling: ClassVar[bool] = False

    #: the choices of the model's ``likelihood`` option, where it has one: ``pyrovae fit`` gives
    #: 8-bit data the first of ``logistic-mixture``, ``continuous_bernoulli``, ``gaussian`` listed
    #: (:func:`pyrovae.data.files.likelihood_for`)
    likelihoods: ClassVar[Optional[Tuple[str, ...]]] = None

    #: the name of the plate over the batch, where it is not the outermost plate (rule 3)
    data_plate: ClassVar[Optional[str]] = None

    #: ``init_from_data(**batch)``: set parameters from a first batch (``fit(init="burda")``,
    #: after Glorot's initialisation), e.g. the output bias at the data's mean
    #: (:func:`pyrovae.nn.output_at_data_mean_`). ``None``: the model has none, and
    #: ``init="burda"`` is refused with a message that says so.
    init_from_data: ClassVar[Optional[Callable[..., None]]] = None

    #: the init a new run gets when none is asked for (a str, or a property); ``None``:
    #: ``burda`` where ``init_from_data`` is defined, else ``torch`` (:func:`pyrovae.nn.default_init`)
    default_init: ClassVar[Optional[str]] = None

    #: Adam's learning rate a new run gets when none is asked for (``fit(lr=None)``, ``pyrovae
    #: fit`` without ``--lr``); ``None``: 1e-3 (:func:`pyrovae.training.fit.default_lr`)
    default_lr: ClassVar[Optional[float]] = None

    #: the objective a new run gets when none is asked for and the guide names only the plain
    #: ELBO (``meanfield`` for ``vae`` and ``least-squares-vae``, taken only with a guide whose
    #: ``closed_form_kl`` is true); ``None``: the guide's ``objective_name``
    #: (:func:`pyrovae.guides.base.objective_for`)
    default_objective: ClassVar[Optional[str]] = None

    #: options a new run's objective gets from the model when they are not given
    #: (``{"warmup_steps": 1000}`` for ``vrnn`` and ``dmm``, 2500 for ``hvae``), for the
    #: objectives that have them
    #: (:func:`pyrovae.guides.base.objective_options_for`)
    default_objective_options: ClassVar[dict] = {}

    #: False where the pair's training step reads tensor values on the host by design (ACN's
    #: neighbour table, the seq2seq encoder's one sync for the longest sentence): fit then runs its
    #: steps eagerly without trying to record them for the CPU replay, and without the replay's
    #: fallback warning, which is meant for a user's own program
    #: (:func:`pyrovae.training.replay.replays_step`)
    replays_step: ClassVar[bool] = True

    def forward(self, x: Optional[torch.Tensor] = None, num_samples: Optional[int] = None):
        """The model of a batch: the batch's tensors as keyword arguments (``x``; a conditional
        model also ``y``; text ``x`` and ``mask``), each observed; with the data left out,
        ``num_samples`` fresh datapoints are drawn and returned (:meth:`batch_size`)."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(**batch)")

    @staticmethod
    def batch_size(x: Optional[torch.Tensor], num_samples: Optional[int] = None) -> int:
        """The size of the data plate: the rows of ``x``, or ``num_samples`` when ``x`` is None
        (the model generates).

        >>> Model.batch_size(torch.zeros(3, 2)), Model.batch_size(None, 5)
        (3, 5)
        >>> Model.batch_size(None)
        Traceback (most recent call last):
        ...
        ValueError: pass data x or num_samples
        """
        n = x.shape[0] if x is not None else num_samples
        if n is None:
            raise ValueError("pass data x or num_samples")
        return n

    def example_batch(self, n: int = 16, seed: int = 0) -> dict:
        """A batch the model accepts, ``n`` rows, the same for the same ``seed``: binary ``x``
        ``(n, x_dim)`` (each entry 1 with probability 0.3), and for a conditional model (its
        :meth:`forward` takes ``y``) binary ``y`` ``(n, y_dim)`` drawn with ``seed + 1``. A model
        of other data (sequences, sets, labels) returns its own."""
        return binary_batch(self, n, seed)


class StandardNormalPrior:
    """p(z) = N(0, I) for a :class:`Model` (``class VAE(StandardNormalPrior, Model)``): call
    :meth:`standard_normal_prior_` in ``__init__``, then :meth:`prior` gives the prior of a
    batch."""

    def standard_normal_prior_(self, z_dim: int) -> None:
        """Give the model the prior p(z) = N(0, I) over ``z_dim`` dimensions (:meth:`prior`);
        its zeros are the buffer ``prior_loc``, so they follow the model to its device and
        dtype."""
        self.register_buffer("prior_loc", torch.zeros(z_dim))

    def prior(self, num_samples: int) -> dist.Distribution:
        """p(z) = N(0, I) for a batch of ``num_samples`` datapoints (event shape ``(z_dim,)``),
        after :meth:`standard_normal_prior_`."""
        loc = self.prior_loc.expand(num_samples, self.prior_loc.shape[-1])
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)


def binary_batch(model, n: int, seed: int = 0) -> dict:
    """:meth:`Model.example_batch`'s default for any model with ``options.x_dim`` (and
    ``options.y_dim`` where its forward takes ``y``)."""
    def rows(size, seed):
        return torch.bernoulli(torch.full((n, size), 0.3), generator=torch.Generator().manual_seed(seed))

    options = model.options
    batch = {"x": rows(options.x_dim, seed)}
    target = model.forward if isinstance(model, torch.nn.Module) else model
    if "y" in inspect.signature(target).parameters:
        batch["y"] = rows(getattr(options, "y_dim", None) or options.x_dim, seed + 1)  # y_dim None: x's size
    return batch


def guide_name_of(model) -> str:
    """The guide a model (class or instance) pairs with: its ``guide_name``, else
    :attr:`Model.guide_name`."""
    return getattr(model, "guide_name", None) or Model.guide_name


def broadcast_cat(*tensors: torch.Tensor) -> torch.Tensor:
    """The tensors joined along the last dimension, their leading dimensions broadcast first:
    an enumerated ``(C, 1, k)`` label code beside ``(C, N, Z)`` codes, a set's context
    ``(K, S, 1, C)`` beside its items ``(S, M, D)``, the input ``(N, D)`` beside particles of
    z ``(K, N, Z)``.

    >>> broadcast_cat(torch.zeros(3, 2), torch.ones(4, 3, 1)).shape
    torch.Size([4, 3, 3])
    """
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(lead + t.shape[-1:]) for t in tensors], -1)
