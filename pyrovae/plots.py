"""Figures written into run folders (PNG, via matplotlib's Agg canvas; no pyplot state).

The image figures work for any pair whose observed site ``x`` has a distribution with a
``mean``: prior samples are the likelihood's mean at z ~ p(z) (the model run on a data batch
without a guide draws z from its prior), and reconstructions replay the guide's z.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pyro.poutine as poutine
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyrovae.evaluate import eval_mode
from pyrovae.weights import bind_batch


def observed_mean(model: Callable, batch: Dict[str, torch.Tensor], guide: Optional[Callable] = None,
                  site: str = "x") -> torch.Tensor:
    """The mean of the observed site ``site`` given z from the guide (reconstruction) or, with
    no guide, from the prior (a sample of the model)."""
    modules = (model, guide)
    model = bind_batch(model, batch)
    with torch.no_grad(), eval_mode(*modules):
        if guide is not None:
            guide_trace = poutine.trace(bind_batch(guide, batch)).get_trace(**batch)
            model = poutine.replay(model, trace=guide_trace)
        trace = poutine.trace(model).get_trace(**batch)
    if site not in trace.nodes:
        raise ValueError(f"the model has no site {site!r} to draw images from")
    return trace.nodes[site]["fn"].mean


def image_grid(images: torch.Tensor, image_shape: Sequence[int], ncol: Optional[int] = None,
               pad: int = 1) -> np.ndarray:
    """Tile ``(N, prod(image_shape))`` images into one 2-D array (N padded to a rectangle)."""
    images = images.detach().float().cpu().clamp(0, 1).reshape(-1, *image_shape).numpy()
    n, (h, w) = len(images), image_shape[-2:]
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad))
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def save_figure(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_image_grid(images: torch.Tensor, image_shape, path, title: str = "", ncol=None) -> Path:
    grid = image_grid(images, image_shape, ncol)
    fig = Figure(figsize=(max(3, grid.shape[1] / 28), max(3, grid.shape[0] / 28) + 0.4))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_samples(model, batch, image_shape, path) -> Path:
    """Prior samples (means of p(x | z), z ~ p(z)), one per row of ``batch``."""
    return save_image_grid(observed_mean(model, batch), image_shape, path, "samples from p(x)")


def save_reconstructions(model, guide, batch, image_shape, path, ncol: int = 8) -> Path:
    """Data (odd rows) above their reconstructions (even rows): mean of p(x | z), z ~ q(z | x)."""
    x = batch["x"]
    recon = observed_mean(model, batch, guide)
    rows = []
    for start in range(0, len(x), ncol):
        rows += [x[start:start + ncol], recon[start:start + ncol]]
    return save_image_grid(torch.cat(rows), image_shape, path, "data (odd rows) and reconstructions", ncol)


def save_training_curves(metrics: List[dict], path) -> Path:
    """Train loss (negative bound) and validation ELBO per epoch."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    epochs = [m["epoch"] for m in metrics]
    ax.plot(epochs, [-m["train_loss"] for m in metrics], label="train bound (objective)")
    if any("valid_elbo" in m for m in metrics):
        ax.plot([m["epoch"] for m in metrics if "valid_elbo" in m],
                [m["valid_elbo"] for m in metrics if "valid_elbo" in m], label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_run_figures(run_dir, model, guide, metrics, data: Dict[str, torch.Tensor], image_shape,
                     n: int = 64) -> List[Path]:
    """The figures ``pyrovae fit`` leaves: samples.png, reconstructions.png, training_curves.png."""
    run_dir = Path(run_dir)
    batch = {k: v[:n] for k, v in data.items()}
    paths = [save_training_curves(metrics, run_dir / "training_curves.png")] if metrics else []
    if image_shape is not None:
        paths.append(save_samples(model, batch, image_shape, run_dir / "samples.png"))
        recon_batch = {k: v[:32] for k, v in data.items()}
        paths.append(save_reconstructions(model, guide, recon_batch, image_shape, run_dir / "reconstructions.png"))
    return paths
