"""The two steps ``pyrovae bench`` times, and how both draw their batches.

:class:`SuiteRunner` is one :func:`pyrovae.fit` step, built by fit's own
:class:`~pyrovae.training.setup.Setup` (the objective on the Pyro pair, the optimizer, quiet
PyroModules and ``pyro.module`` statements, a CUDA graph on a GPU, the recorded forward pass
replayed on a CPU), with fit's per-step
bookkeeping; :class:`PlainRunner` is the hand-written step of :mod:`pyrovae.bench.reference`.
The pairs (:func:`make_pair`): the suite's VAE with its ``diag`` or ``iaf`` guide, and
``user``, a user's pair written as plain Pyro functions (:func:`user_pair`: the same networks
as ``diag``, registered with ``pyro.module``).
:class:`Batches` draws batches for either as fit does. Both :mod:`pyrovae.bench.command`
and :mod:`pyrovae.bench.profile` build on this module (neither imports the other's pieces).
"""

from __future__ import annotations

from typing import Dict

import pyro
import torch

from pyrovae.bench.reference import PlainVAE
from pyrovae.training.setup import FitOptions, Setup
from pyrovae.training.step import autocast, make_optimizer

OBJECTIVES = {"elbo": ("elbo", 1), "meanfield": ("meanfield", 1), "iwae5": ("iwae", 5), "iwae50": ("iwae", 50)}
X_DIM, Z_DIM, HIDDEN = 784, 50, (200, 200)
#: the pairs: the suite's VAE with the diagonal or the IAF guide; a user's plain-function pair
PAIRS = ("diag", "iaf", "user")


def objective_kind(name: str) -> tuple:
    """``"elbo"``, ``"meanfield"`` or ``"iwaeK"`` -> (kind, K)."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    if name.startswith("iwae") and name[4:].isdigit():
        return "iwae", int(name[4:])
    raise ValueError(f"unknown objective {name!r}: elbo, meanfield or iwaeK (e.g. iwae5)")


def bench_objective(name: str, particle_chunk: int = 0):
    """The suite's objective for a bench name (``elbo``, ``meanfield``, ``iwaeK``)."""
    from pyrovae.infer.objectives import ELBO, IWAE, MeanFieldELBO

    kind, k = objective_kind(name)
    if kind == "elbo":
        return ELBO()
    if kind == "meanfield":
        return MeanFieldELBO()
    return IWAE(num_particles=k, particle_chunk=particle_chunk)


def make_pair(guide_name: str, device, seed: int = 0, tag: str = ""):
    """``(model, guide, plain)`` for a pair name of :data:`PAIRS`: the Pyro pair, and a
    :class:`~pyrovae.bench.reference.PlainVAE` with copies of its networks (same weights).
    ``tag`` is appended to the ``pyro.module`` names of a ``user`` pair, so that two of them
    can train side by side (each its own entries in Pyro's param store)."""
    from pyrovae.guides import DiagNormalGuide, IAFGuide
    from pyrovae.models import VAE

    if guide_name not in PAIRS:
        raise ValueError(f"unknown pair {guide_name!r}: choose from {', '.join(PAIRS)}")
    torch.manual_seed(seed)
    model = VAE(X_DIM, Z_DIM, HIDDEN)
    guide = (IAFGuide(X_DIM, Z_DIM, HIDDEN, num_flows=2) if guide_name == "iaf"
             else DiagNormalGuide(X_DIM, Z_DIM, HIDDEN))
    plain = PlainVAE(model, guide)
    if guide_name == "user":
        model, guide = user_pair(model.decoder.to(device), guide.encoder.to(device), Z_DIM, tag)
        return model, guide, plain.to(device)
    return model.to(device), guide.to(device), plain.to(device)


def user_pair(decoder: torch.nn.Module, encoder: torch.nn.Module, z_dim: int, tag: str = "") -> tuple:
    """A user's model and guide written as plain Pyro functions around two networks, as in
    docs/writing-a-pair.md: ``pyro.module`` registers each network, the prior is
    ``Normal(0, 1)`` and the likelihood ``Bernoulli(logits=decoder(z))``, the guide
    ``Normal(loc, softplus(raw) + 1e-5)`` from ``encoder(x)`` (the numbers of the suite's VAE
    with the diagonal guide). The networks are kept as ``model.decoder`` and ``guide.encoder``;
    ``tag`` is appended to their ``pyro.module`` names.

    >>> model, guide = user_pair(torch.nn.Linear(2, 6), torch.nn.Linear(6, 4), 2)
    >>> import pyro.poutine as poutine
    >>> poutine.trace(guide).get_trace(torch.ones(3, 6)).nodes["z"]["value"].shape
    torch.Size([3, 2])
    """
    import pyro.distributions as dist
    import torch.nn.functional as F

    def model(x):
        pyro.module("decoder" + tag, decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder" + tag, encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = encoder(x).split(z_dim, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1))

    model.decoder, guide.encoder = decoder, encoder
    return model, guide


class Batches:
    """Batches as fit draws them: data resident on the device, one random permutation per
    pass (drawn on the CPU), a gather per batch, dynamic binarization as ``rand < p`` (why:
    docs/performance.md)."""

    def __init__(self, x: torch.Tensor, batch_size: int, seed: int = 0):
        self.x, self.batch_size = x, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position = None, len(x)

    def __call__(self) -> Dict[str, torch.Tensor]:
        if self.position + self.batch_size > len(self.x):
            self.order = torch.randperm(len(self.x), generator=self.generator).to(self.x.device)
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        x = self.x.index_select(0, index)
        return {"x": (torch.rand_like(x) < x).to(x.dtype)}


class SuiteRunner:
    """One :func:`pyrovae.fit` step per call, with fit's per-step bookkeeping. The step is the
    one fit builds (:class:`~pyrovae.training.setup.Setup`, checked on ``batch_size`` rows of
    MNIST's width), so whatever fit runs per batch, the bench times.

    :ivar setup: the :class:`~pyrovae.training.setup.Setup`.
    :ivar run: its step, ``run(batch, i) -> loss``.
    """

    def __init__(self, model, guide, objective, device, lr, graphs=False, precision="fp32", batch_size=100,
                 compile=False, replay=True):
        device = torch.device(device)
        x = torch.bernoulli(torch.full((batch_size, X_DIM), 0.5), generator=torch.Generator().manual_seed(0))
        options = FitOptions(device=device, cuda_graphs=graphs and device.type == "cuda", precision=precision,
                             progress=False, figures=False, distributed=False, compile=compile,
                             replay=replay)
        self.setup = Setup(model, guide, x, objective, batch_size, lr, 0, options)
        self.run = self.setup.step
        self.step, self.pending = 0, []

    def __call__(self, batch):
        loss = self.run(batch, self.step)
        self.step += 1
        self.pending.append(loss)
        if len(self.pending) >= 50:  # fit's check of the losses, every 50 steps
            values = torch.stack(self.pending).cpu()
            assert torch.isfinite(values).all()
            self.pending = []
        return loss


class PlainRunner:
    """The hand-written step: loss, zero_grad, backward, Adam."""

    def __init__(self, plain, objective_name, device, lr, default_adam=False, precision="fp32"):
        self.plain, self.device, self.precision = plain, torch.device(device), precision
        self.kind, self.k = objective_kind(objective_name)
        params = list(plain.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr) if default_adam else make_optimizer(params, lr, device)

    def __call__(self, batch):
        with autocast(self.device, self.precision):
            loss = self.plain.loss(batch["x"], self.kind, self.k)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def sync(device):
    """Wait for the device (CUDA) so that a timer reads the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize()
