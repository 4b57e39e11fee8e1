"""Hyperspherical against Gaussian latents on MNIST, across latent dimensions.

For each latent dimension ``z`` the Gaussian VAE (model ``vae``, guide ``diag``, z in R^z) and
the hyperspherical VAE (model ``svae``, guide ``vmf``: uniform prior on the sphere S^z in
R^(z+1), the same z degrees of freedom, as Davidson et al.'s code builds it; ``--sphere
ambient``: S^(z-1) in R^z) are trained at an equal budget (same sizes, epochs, batch, Adam,
learning rate, seed, batch order) on dynamically binarized MNIST with Davidson et al.'s
example architecture (encoder 256-128, decoder 128-256, ReLU, Bernoulli; batch 64, Adam
1e-3), and scored by importance sampling with K samples on the same first test images. The
table gives both log-likelihoods and their paired per-image difference (svae - gaussian) with
its standard error. Davidson et al. (arXiv:1804.00891, Table 1) report the S-VAE ahead at
z = 2, 5, 10 and behind at z = 20, 40.

The figure shows the vMF guide's mean directions of test images coloured by class, on the
circle S^1 and on the sphere S^2 (S-VAEs trained at the same budget; the sphere in two
projections, the upper and lower hemisphere seen from the poles).

    OMP_NUM_THREADS=1 python benchmarks/svae_vs_gaussian.py --data-dir ../shared/data \\
        --epochs 10 --train-size 20000 --z-dims 2 3 5 --num-samples 500 --test-size 1000

Not a test.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.registry import build, get_guide, get_model

PAIRS = {"gaussian": ("vae", "diag"), "svae": ("svae", "vmf")}


def latent_size(kind, z_dim, args):
    """The latent's ambient dimension: z for the Gaussian; for the S-VAE z (S^(z-1), ``--sphere
    ambient``) or z + 1 (S^z, as many degrees of freedom as the Gaussian's z, ``--sphere manifold``)."""
    return z_dim + 1 if kind == "svae" and args.sphere == "manifold" else z_dim


def train(kind, z_dim, dataset, args):
    model_name, guide_name = PAIRS[kind]
    size = latent_size(kind, z_dim, args)
    encoder, decoder = tuple(args.encoder_dims), tuple(args.decoder_dims)
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    fill = {"x_dim": dataset.x_dim}
    model = build(get_model(model_name), {"z_dim": size, "hidden_dims": decoder, "activation": args.activation}, fill=fill)
    guide = build(get_guide(guide_name), {"z_dim": size, "hidden_dims": encoder, "activation": args.activation}, fill=fill)
    valid = {k: v[: args.valid_size] for k, v in dataset.valid.items()}
    data = dataset if args.train_size is None else dataclasses.replace(
        dataset, train={k: v[: args.train_size] for k, v in dataset.train.items()})
    t0, c0 = time.perf_counter(), time.process_time()
    result = pyrovae.fit(model, guide, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, progress=False, valid_data=valid, init=args.init,
                         objective=args.objective)
    return model, guide, result, time.perf_counter() - t0, time.process_time() - c0


def run_one(kind, z_dim, dataset, test, args):
    model, guide, result, train_seconds, train_cpu = train(kind, z_dim, dataset, args)
    t0 = time.perf_counter()
    pyro.set_rng_seed(args.seed)
    estimate = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples)
    return {
        "kind": kind, "z_dim": z_dim, "train_loss": result.metrics[-1]["train_loss"],
        "test_ll": estimate.log_likelihood, "test_ll_stderr": estimate.stderr, "test_elbo": estimate.elbo,
        "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0,
        "train_cpu_seconds_per_epoch": train_cpu / args.epochs, "latent_size": latent_size(kind, z_dim, args),
        "per_datapoint": estimate.per_datapoint, "guide": guide,
    }


def paired(a, b):
    """Mean and standard error of the per-image difference a - b (same test images)."""
    d = a["per_datapoint"] - b["per_datapoint"]
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


def table(rows, args, machine) -> str:
    lines = [
        f"Dynamically binarized MNIST ({args.train_size or 'all'} training images); encoder hidden "
        f"{tuple(args.encoder_dims)}, decoder hidden {tuple(args.decoder_dims)} "
        f"{args.activation}, Bernoulli; the S-VAE at z on {'S^z' if args.sphere == 'manifold' else 'S^(z-1)'}; "
        f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, seed {args.seed}, init "
        f"{args.init or 'default'}, objective {args.objective or 'default'}; test log-likelihood with K={args.num_samples} on the first {args.test_size} "
        f"test images. {machine}.",
        "",
        *_harness.header(["z", "Gaussian (vae + diag) log p(x) ± s.e.", "S-VAE (svae + vmf) log p(x) ± s.e.",
                          "svae - gaussian (paired s.e.)", "Gaussian ELBO", "S-VAE ELBO",
                          "seconds (both, train + eval)"]),
    ]
    for z_dim in sorted({r["z_dim"] for r in rows}):
        g = next((r for r in rows if r["z_dim"] == z_dim and r["kind"] == "gaussian"), None)
        s = next((r for r in rows if r["z_dim"] == z_dim and r["kind"] == "svae"), None)
        if g is None or s is None:
            continue
        mean, se = paired(s, g)
        seconds = sum(r["train_seconds"] + r["eval_seconds"] for r in (g, s))
        lines.append(
            f"| {z_dim} | {g['test_ll']:.2f} ± {g['test_ll_stderr']:.2f} | {s['test_ll']:.2f} ± {s['test_ll_stderr']:.2f} | "
            f"{mean:+.2f} ± {se:.2f} | {g['test_elbo']:.2f} | {s['test_elbo']:.2f} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


@torch.no_grad()
def mean_directions(guide, x):
    return guide.encode(x).loc


def figure(circle, sphere, labels, path):
    from matplotlib.figure import Figure

    from pyrovae.evaluation.plots import save_figure

    fig = Figure(figsize=(13, 4.4))
    cmap = "tab10"
    ax = fig.add_subplot(1, 3, 1)
    ax.scatter(circle[:, 0], circle[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=9.5, s=6, alpha=0.7)
    ax.set_aspect("equal")
    ax.set_xlim(-1.15, 1.15)
    ax.set_ylim(-1.15, 1.15)
    ax.set_title("circle S^1:\nvMF mean directions")
    for i, (name, keep) in enumerate((("upper", sphere[:, 2] >= 0), ("lower", sphere[:, 2] < 0))):
        ax = fig.add_subplot(1, 3, 2 + i)
        points = ax.scatter(sphere[keep, 0], sphere[keep, 1], c=labels[keep], cmap=cmap, vmin=-0.5, vmax=9.5,
                            s=6, alpha=0.7)
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Circle"]).Circle((0, 0), 1, fill=False, lw=0.5))
        ax.set_aspect("equal")
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.set_title(f"sphere S^2: {name} half\n(z1, z2) where z3 {'>=' if i == 0 else '<'} 0")
    fig.colorbar(points, ax=fig.axes, ticks=range(10), label="digit class", fraction=0.02)
    return save_figure(fig, path)


def main():
    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, epochs=10, batch_size=64, lr=1e-3,
                        num_samples=500, train_size=None, test_size=1000, seed=0, threads=1, figure=None, json=None)
    p.add_argument("--z-dims", type=int, nargs="+", default=[2, 3, 5, 10, 20, 40])
    p.add_argument("--valid-size", type=int, default=100, help="validation images for the per-epoch pass")
    p.add_argument("--out", default=None, help="write the Markdown table here (rewritten after each run)")
    p.add_argument("--encoder-dims", type=int, nargs="+", default=[256, 128],
                   help="encoder widths, x to z (default: Davidson et al.'s example's; the library's: 200 200)")
    p.add_argument("--decoder-dims", type=int, nargs="+", default=[128, 256],
                   help="decoder widths, z to x (default: Davidson et al.'s example's; the library's: 200 200)")
    p.add_argument("--activation", default="relu", help="both networks' nonlinearity (the library's: tanh)")
    p.add_argument("--sphere", choices=["ambient", "manifold"], default="manifold",
                   help="the S-VAE at z: on S^(z-1) in R^z (ambient), or on S^z in R^(z+1), the Gaussian's z "
                        "degrees of freedom, as Davidson et al.'s example builds it (manifold)")
    p.add_argument("--kinds", nargs="+", choices=list(PAIRS), default=list(PAIRS), help="which families to train")
    p.add_argument("--objective", default=None, help="fit's objective (default: the guide's; meanfield: "
                   "the closed-form KL, as Davidson et al.'s example)")
    p.add_argument("--init", default=None, help="fit's init (default: the model's default)")
    p.add_argument("--per-image", default=None, help="save the per-image test log p(x) of every run here (torch.save)")
    args = p.parse_args()

    machine = _harness.start(args)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    test = {k: v[: args.test_size] for k, v in dataset.test.items()}
    start = time.perf_counter()
    rows = []
    for z_dim in args.z_dims:
        for kind in args.kinds:
            rows.append(run_one(kind, z_dim, dataset, test, args))
            summary = {k: v for k, v in rows[-1].items() if k not in ("per_datapoint", "guide")}
            print(json.dumps(summary), flush=True)
            text = table(rows, args, machine)
            if args.out:
                with open(args.out, "w") as f:
                    f.write(text)
            _harness.write_json(args.json, [{k: v for k, v in r.items() if k not in ("per_datapoint", "guide")}
                                            for r in rows])
            if args.per_image:
                torch.save({f"{r['kind']}_z{r['z_dim']}": r["per_datapoint"] for r in rows}, args.per_image)
    print(text)
    if args.figure:
        x = test["x"]
        labels = test["y"].long().numpy()
        directions = []
        for size in (2, 3):  # the S-VAEs on S^1 and S^2: the table's, else trained here
            guide = next((r["guide"] for r in rows if r["latent_size"] == size and r["kind"] == "svae"), None)
            if guide is None:
                _, guide, _, _, _ = train("svae", size - 1 if args.sphere == "manifold" else size, dataset, args)
            directions.append(mean_directions(guide, x).numpy())
        print(f"figure: {figure(*directions, labels, args.figure)}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
