"""Figures written into run folders (PNG, via matplotlib's Agg canvas; no pyplot state).

Prior samples come from the model's own generative process
(:func:`~pyrovae.evaluation.sampling.prior_samples`: never from a data batch, which would
condition an autoregressive decoder on the data); reconstructions, for any pair whose
observed site has a distribution with a ``mean``, replay the guide's z. The observed site
is found from the trace (``is_observed``), whatever its name: the one named by ``site=``,
else the model's first observed site; each figure's title names the site it shows.
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

from pyrovae.evaluation.log_likelihood import eval_mode
from pyrovae.evaluation.sampling import (  # noqa: F401 (grey_scale, observed_mean: re-exported)
    CannotSampleError, grey_scale, observed_mean, observed_site, prior_samples,
)
from pyrovae.infer.importance import bind_batch


def is_image_shape(image_shape) -> bool:
    """``(H, W)`` grey or ``(C, H, W)`` with C = 1 or 3 (channels first): shapes drawn as images."""
    return image_shape is not None and (len(image_shape) == 2 or (len(image_shape) == 3 and image_shape[0] in (1, 3)))


def image_grid(images: torch.Tensor, image_shape: Sequence[int], ncol: Optional[int] = None,
               pad: int = 1) -> np.ndarray:
    """Tile ``(N, prod(image_shape))`` images, grey ``(H, W)`` or channels-first ``(C, H, W)``,
    into one ``(rows, cols)`` or ``(rows, cols, 3)`` array (N padded to a rectangle)."""
    if not is_image_shape(image_shape):
        raise ValueError(f"image_shape {tuple(image_shape)} is not (H, W) or (C, H, W) with C = 1 or 3")
    images = images.detach().float().cpu().clamp(0, 1).reshape(-1, *image_shape).numpy()
    if len(image_shape) == 3:  # channels last for imshow; one channel is grey
        images = images.transpose(0, 2, 3, 1)
        images = images[..., 0] if image_shape[0] == 1 else images
    n, (h, w) = len(images), images.shape[1:3]
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad) + images.shape[3:])
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


def save_samples(model, num_samples: int, image_shape, path, like=None) -> Path:
    """``num_samples`` draws of the model's generative process (:func:`prior_samples`; ``like``,
    a batch with the data's shapes, for a plain Pyro model), titled with what they are;
    :class:`~pyrovae.evaluation.sampling.CannotSampleError` for a model that does not draw
    x ~ p(x) on its own."""
    x, title = prior_samples(model, num_samples, like=like)
    return save_image_grid(x.reshape(num_samples, -1), image_shape, path, f"samples: {title}")


def save_reconstructions(model, guide, batch, image_shape, path, ncol: int = 8) -> Path:
    """Data (odd rows) above their reconstructions (even rows): mean of p(x | z), z ~ q(z | x)."""
    chosen, recon = observed_mean(model, batch, guide, return_site=True)
    scale = grey_scale(chosen["fn"])
    x, recon = chosen["value"].reshape(recon.shape) / scale, recon / scale
    rows = []
    for start in range(0, len(x), ncol):
        rows += [x[start:start + ncol], recon[start:start + ncol]]
    return save_image_grid(torch.cat(rows), image_shape, path,
                           f"site {chosen['name']!r}: data (odd rows) and reconstructions", ncol)


def save_training_curves(metrics: List[dict], path) -> Path:
    """Train loss (negative bound) and validation ELBO per epoch."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    epochs = [m["epoch"] for m in metrics]
    marker = "o" if len(metrics) < 20 else None  # a single epoch is a point, not an empty plot
    ax.plot(epochs, [-m["train_loss"] for m in metrics], label="train bound (objective)", marker=marker)
    if any("valid_elbo" in m for m in metrics):
        ax.plot([m["epoch"] for m in metrics if "valid_elbo" in m],
                [m["valid_elbo"] for m in metrics if "valid_elbo" in m], label="validation ELBO", marker=marker)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_run_figures(run_dir, model, guide, metrics, data: Dict[str, torch.Tensor], image_shape,
                     n: int = 64) -> List[Path]:
    """The figures ``pyrovae fit`` leaves: samples.png, reconstructions.png, training_curves.png.
    samples.png is left out for a model that cannot draw x ~ p(x) on its own, and for one whose
    draws are sequential (``sequential_sampling``: pixelcnn-vae makes one network pass per
    pixel, minutes for a grid on a CPU): ``pyrovae sample`` draws them when asked."""
    run_dir = Path(run_dir)
    paths = [save_training_curves(metrics, run_dir / "training_curves.png")] if metrics else []
    if is_image_shape(image_shape):
        try:
            if not getattr(model, "sequential_sampling", False):
                paths.append(save_samples(model, n, image_shape, run_dir / "samples.png", like=data))
        except CannotSampleError:  # the model says why when `pyrovae sample` asks
            pass
        recon_batch = {k: v[:32] for k, v in data.items()}
        paths.append(save_reconstructions(model, guide, recon_batch, image_shape, run_dir / "reconstructions.png"))
    return paths


# ---------------------------------------------------------------- latent-space figures


def _encodings(guide, batch, site=None):
    """``(site name, E_q[z | x] (N, D), q)`` for the guide's vector latent site."""
    from pyrovae.distributions.mean import posterior_mean
    from pyrovae.evaluation.monitors import latent_site

    with torch.no_grad(), eval_mode(guide):
        name, q, _ = latent_site(guide, batch, site)
        means = posterior_mean(q)
    if _on_sphere(q):
        means = means / means.norm(dim=-1, keepdim=True)
    return name, means, q


def _on_sphere(q) -> bool:
    from pyro.distributions import constraints

    return q.support is constraints.sphere


def decoded_mean(model: Callable, batch: Dict[str, torch.Tensor], site: str, z: torch.Tensor,
                 observed: Optional[str] = None) -> torch.Tensor:
    """The mean of the observed site ``observed`` (default: the first) given the latent ``site``
    fixed to ``z`` (one row of z per row of ``batch``; the other tensors of the batch, e.g.
    labels, are passed along)."""
    modules = (model,)
    model = bind_batch(model, batch)
    with torch.no_grad(), eval_mode(*modules):
        trace = poutine.trace(poutine.condition(model, data={site: z})).get_trace(**batch)
    return observed_site(trace, observed, conditioned=(site,))["fn"].mean


def observed_name(model: Callable, batch: Dict[str, torch.Tensor]) -> str:
    """The name of the observed site the image figures show (the model's first)."""
    modules = (model,)
    with torch.no_grad(), eval_mode(*modules), poutine.block():
        return observed_site(poutine.trace(bind_batch(model, batch)).get_trace(**batch))["name"]


def _repeat_row(batch, index: int, count: int) -> Dict[str, torch.Tensor]:
    return {k: v[index:index + 1].expand(count, *v.shape[1:]) for k, v in batch.items()}


def save_traversals(model, guide, batch, image_shape, path, *, num_dims: int = 8, steps: int = 9,
                    span: float = 3.0, index: int = 0, site: Optional[str] = None) -> Path:
    """Latent traversals: row ``j`` decodes datapoint ``index``'s encoding with the ``j``-th most
    active dimension (largest ``Var_x E_q[z_j]`` over ``batch``) moved by ``-span .. span``
    (prior units), the others fixed. Spherical latents are projected back onto the sphere."""
    name, means, q = _encodings(guide, batch, site)
    activity = means.var(0, unbiased=False)
    dims = torch.argsort(activity, descending=True)[:num_dims]
    offsets = torch.linspace(-span, span, steps, device=means.device)
    z = means[index].repeat(len(dims) * steps, 1)                    # (rows * steps, D)
    for r, j in enumerate(dims.tolist()):
        z[r * steps:(r + 1) * steps, j] += offsets
    if _on_sphere(q):
        z = z / z.norm(dim=-1, keepdim=True)
    images = decoded_mean(model, _repeat_row(batch, index, len(z)), name, z)
    grid = image_grid(images, image_shape, ncol=steps)
    fig = Figure(figsize=(max(3, steps * 0.6), max(2, len(dims) * 0.6) + 0.5))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    h = image_shape[-2] + 1
    ax.set_yticks([1 + h * r + h / 2 for r in range(len(dims))], [f"{name}[{j}]" for j in dims.tolist()])
    ax.set_xticks([1 + (image_shape[-1] + 1) * (c + 0.5) for c in (0, steps // 2, steps - 1)],
                  [f"{-span:+g}", "0", f"{span:+g}"])
    ax.set_title(f"site {observed_name(model, batch)!r}: traversals of the {len(dims)} most active dims "
                 f"(datapoint {index})")
    return save_figure(fig, path)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit vectors ``a`` and ``b`` (D,) at fractions ``t`` (T,)."""
    omega = torch.arccos((a * b).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    t = t.unsqueeze(-1)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def save_interpolations(model, guide, batch, image_shape, path, *, num_pairs: int = 4, steps: int = 10,
                        site: Optional[str] = None) -> Path:
    """Rows: datapoints ``2i`` and ``2i+1`` (first and last columns) and the decoded means along
    the path between their encodings, linear in z (spherical for latents on the sphere)."""
    name, means, q = _encodings(guide, batch, site)
    spherical = _on_sphere(q)
    num_pairs = min(num_pairs, len(means) // 2)
    if num_pairs < 1:
        raise ValueError("interpolations need at least two datapoints")
    t = torch.linspace(0, 1, steps, device=means.device)
    chosen, recon = observed_mean(model, batch, guide, return_site=True)
    data = chosen["value"].reshape(recon.shape)
    rows = []
    for i in range(num_pairs):
        a, b = means[2 * i], means[2 * i + 1]
        z = slerp(a, b, t) if spherical else (1 - t.unsqueeze(-1)) * a + t.unsqueeze(-1) * b
        decoded = decoded_mean(model, _repeat_row(batch, 2 * i, steps), name, z)
        rows.append(torch.cat([data[2 * i:2 * i + 1], decoded, data[2 * i + 1:2 * i + 2]]))
    kind = "spherical" if spherical else "linear"
    return save_image_grid(torch.cat(rows), image_shape, path,
                           f"site {chosen['name']!r}: {kind} interpolations (data at both ends)", ncol=steps + 2)


def save_latent_map(guide, batch, path, *, site: Optional[str] = None, max_points: int = 2000) -> Path:
    """Encoder means of the batch in 2-D, coloured by the label ``batch["y"]`` where present:
    the latent coordinates themselves when ``z_dim == 2``, else their first two principal
    components (PCA)."""
    batch = {k: v[:max_points] for k, v in batch.items()}
    name, means, _ = _encodings(guide, batch, site)
    means = means.detach().double().cpu().numpy()
    if means.shape[1] <= 2:
        points = means if means.shape[1] == 2 else np.column_stack([means[:, 0], np.zeros(len(means))])
        xlabel, ylabel = f"{name}[0]", (f"{name}[1]" if means.shape[1] == 2 else "")
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(means)
        points = pca.transform(means)
        share = pca.explained_variance_ratio_
        xlabel, ylabel = f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%})"
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    labels = batch.get("y")
    if labels is not None and labels.dim() == 1:
        labels = labels.cpu().numpy()
        cmap = "tab10" if labels.max() < 10 else "viridis"
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, s=6, alpha=0.8)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"encoder means E_q[{name} | x]" + ("" if means.shape[1] <= 2 else ", PCA"))
    return save_figure(fig, path)


def save_khat(khat, path) -> Path:
    """PSIS k-hat per datapoint with the 0.5 (good) and 0.7 (unreliable) thresholds."""
    khat = np.asarray(khat, dtype=float)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    colors = np.where(khat > 0.7, "tab:red", np.where(khat > 0.5, "tab:orange", "tab:blue"))
    ax.scatter(np.arange(len(khat)), khat, c=colors, s=8)
    for level, style in ((0.5, "--"), (0.7, "-")):
        ax.axhline(level, color="gray", linestyle=style, linewidth=1)
        ax.text(len(khat), level, f" {level}", va="center", fontsize=8)
    ax.set_xlabel("datapoint")
    ax.set_ylabel("Pareto k-hat")
    ax.set_title(f"PSIS k-hat of q(z|x): {(khat > 0.7).mean():.1%} > 0.7, {(khat > 0.5).mean():.1%} > 0.5")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_kl_per_dim(kl_per_dim, mean_variance, path, threshold: float = 0.01) -> Path:
    """Bar chart of the mean KL per latent dimension (sorted), active units highlighted."""
    kl = np.asarray(kl_per_dim, dtype=float)
    active = np.asarray(mean_variance, dtype=float) > threshold
    order = np.argsort(-kl)
    fig = Figure(figsize=(max(4, len(kl) * 0.15 + 2), 3))
    ax = fig.add_subplot()
    ax.bar(np.arange(len(kl)), kl[order], color=np.where(active[order], "tab:blue", "lightgray"))
    ax.set_xticks(np.arange(len(kl)), [str(i) for i in order], fontsize=6, rotation=90)
    ax.set_xlabel("latent dimension (blue: active unit)")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL per dimension: {int(active.sum())} of {len(kl)} units active")
    return save_figure(fig, path)
