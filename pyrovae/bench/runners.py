"""The two steps ``pyrovae bench`` times, and how both draw their batches.

:class:`SuiteRunner` is one :func:`pyrovae.fit` step (the objective on the Pyro pair, the
optimizer, quiet PyroModules, a CUDA graph on a GPU) with fit's per-step bookkeeping;
:class:`PlainRunner` is the hand-written step of :mod:`pyrovae.bench.reference`.
:class:`Batches` draws batches for either as fit does. Both :mod:`pyrovae.bench.command`
and :mod:`pyrovae.bench.profile` build on this module (neither imports the other's pieces).
"""

from __future__ import annotations

from typing import Dict

import pyro
import torch

from pyrovae.bench.reference import PlainVAE
from pyrovae.training.cuda_graph import GraphedStep, static_from
from pyrovae.training.step import LossModule, TrainStep, autocast, make_optimizer
from pyrovae.infer.fast_path import quiet_pyro_modules

OBJECTIVES = {"elbo": ("elbo", 1), "meanfield": ("meanfield", 1), "iwae5": ("iwae", 5), "iwae50": ("iwae", 50)}
X_DIM, Z_DIM, HIDDEN = 784, 50, (200, 200)


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


def make_pair(guide_name: str, device, seed: int = 0):
    from pyrovae.guides import DiagNormalGuide, IAFGuide
    from pyrovae.models import VAE

    torch.manual_seed(seed)
    model = VAE(X_DIM, Z_DIM, HIDDEN)
    guide = (IAFGuide(X_DIM, Z_DIM, HIDDEN, num_flows=2) if guide_name == "iaf"
             else DiagNormalGuide(X_DIM, Z_DIM, HIDDEN))
    plain = PlainVAE(model, guide)
    return model.to(device), guide.to(device), plain.to(device)


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
    """One :func:`pyrovae.fit` step per call, with fit's per-step bookkeeping."""

    def __init__(self, model, guide, objective, device, lr, graphs=False, precision="fp32"):
        pyro.clear_param_store()
        module = LossModule(model, guide, objective)
        optimizer = make_optimizer(list(module.parameters()), lr, device, capturable=graphs)
        step = TrainStep(module, optimizer, precision, quiet_pyro_modules(model, guide), device)
        self.run = GraphedStep(step, enabled=graphs, static_from=static_from(objective))
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
