"""The conditional VAE against its deterministic baseline on MNIST half completion (Sohn et al. 2015).

x = the top half of a dynamically binarized MNIST digit, y = its bottom half. Both models have
the same networks (``--hidden-dims``) and budget (``--epochs`` over the 50,000 training
images, batch 100, Adam 1e-3, seed 0): the CVAE p(z | x) p(y | x, z) with the recognition
guide q(z | x, y), trained on the ELBO; the baseline p(y | x) without z, trained by maximum
likelihood. On the first ``--num-test`` test images it prints log p(y | x), importance-sampled
with the recognition guide (K = ``--num-samples``; the baseline's is exact), with standard
errors and the paired difference on the same images, and saves the completions figure
(docs/figures/cvae_completions.png).

    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py                 # the docs/cvae.md table
    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py --epochs 1 --num-test 100 --num-samples 100  # a quick look
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyro
import torch
import _harness  # benchmarks/_harness.py
from matplotlib.figure import Figure

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.data.halves import join_halves
from pyrovae.evaluation.plots import image_grid, save_figure
from pyrovae.guides.cvae import CVAEGuide
from pyrovae.models.cvae import CVAE, HybridObjective
from pyrovae.evaluation.compare import paired_difference

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "cvae_completions.png"


def train(dataset, deterministic: bool, args, objective=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sizes = dict(dataset.dims(), z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims), activation=args.activation,
                 deterministic=deterministic)
    model, guide = CVAE(**sizes), CVAEGuide(**sizes)
    t0 = time.perf_counter()
    result = fit(model, guide, dataset, epochs=args.epochs, batch_size=100, lr=1e-3, seed=args.seed, progress=False,
                 **({"objective": objective} if objective is not None else {}))
    seconds = time.perf_counter() - t0
    model.eval(), guide.eval()
    return model, guide, result, seconds


def completions_figure(dataset, cvae, baseline, path: Path, num_inputs: int = 8, num_z: int = 6) -> Path:
    """Rows: test digits. Columns: the truth, the baseline's completion (mean of p(y | x)), then
    ``num_z`` CVAE completions (mean of p(y | x, z), z ~ p(z | x)); a line marks the cut."""
    x, y = dataset.test["x"][:num_inputs], dataset.test["y"][:num_inputs]
    pyro.set_rng_seed(1)
    samples = cvae.complete(x, num_samples=num_z)  # (S, N, y_dim)
    base = baseline.complete(x, num_samples=1)[0]
    rows = []
    for i in range(num_inputs):
        rows += [join_halves(x[i], y[i]), join_halves(x[i], base[i])]
        rows += [join_halves(x[i], samples[s, i]) for s in range(num_z)]
    grid = image_grid(torch.stack(rows), (28, 28), ncol=2 + num_z)
    fig = Figure(figsize=(1.0 * (2 + num_z), 1.0 * num_inputs + 0.6))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for r in range(num_inputs):  # the cut between the given top and the completed bottom
        ax.axhline(1 + r * 29 + 14 - 0.5, color="tab:red", lw=0.4, alpha=0.6)
    ax.set_xticks([14.5 + c * 29 for c in range(2 + num_z)])
    ax.set_xticklabels(["truth", "baseline"] + [f"CVAE z{s + 1}" for s in range(num_z)], fontsize=7)
    ax.set_yticks([])
    ax.set_title("bottom halves completed from the top (above the red line); z ~ p(z | x)", fontsize=8)
    return save_figure(fig, path)


def main():
    p = _harness.parser(__doc__.split("\n\n")[0], epochs=10, z_dim=20, num_samples=1000, seed=0, figure=FIGURE)
    p.add_argument("--hidden-dims", type=int, nargs="*", default=[500, 500])
    p.add_argument("--activation", default="relu")
    p.add_argument("--num-test", type=int, default=10000, help="first N test images (paired)")
    p.add_argument("--hybrid-alpha", type=float, default=None,
                   help="also train the CVAE on Sohn et al.'s hybrid objective (cvae-hybrid) with this alpha")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    dataset = load_dataset("mnist-halves", data_dir=os.environ.get("PYROVAE_DATA"))  # dynamic binarization
    test = {k: v[:args.num_test] for k, v in dataset.test.items()}
    print(f"mnist-halves: x = top 392 pixels, y = bottom 392; {len(dataset.train['x'])} training images, "
          f"{args.epochs} epochs, batch 100, Adam 1e-3, hidden {tuple(args.hidden_dims)} {args.activation}, "
          f"z_dim {args.z_dim}, {torch.get_num_threads()} thread(s)")
    rows = {}
    runs = [("baseline p(y|x), no z", True, None), ("CVAE p(z|x) p(y|x,z)", False, None)]
    if args.hybrid_alpha is not None:
        runs.append((f"CVAE, hybrid alpha={args.hybrid_alpha:g}", False, HybridObjective(alpha=args.hybrid_alpha)))
    for name, deterministic, objective in runs:
        model, guide, result, seconds = train(dataset, deterministic, args, objective)
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        est = log_likelihood(model, guide, test, num_samples=1 if deterministic else args.num_samples)
        rows[name] = (model, est, seconds, time.perf_counter() - t0, result.metrics[-1].get("valid_elbo"))

    print(f"\nlog p(y | x) on the first {args.num_test} test images (nats, mean ± standard error):")
    print(f"{'model':27s} {'log p(y|x)':>18s} {'ELBO':>9s} {'K':>5s} {'train s':>8s} {'eval s':>7s}")
    for name, (_, est, seconds, eval_seconds, _) in rows.items():
        k = est.num_samples if "CVAE" in name else "exact"
        print(f"{name:27s} {est.log_likelihood:10.2f} ± {est.stderr:5.2f} {est.elbo:9.2f} {k!s:>5s} "
              f"{seconds:8.0f} {eval_seconds:7.0f}")
    (base, base_est, *_), (cvae, cvae_est, *_) = list(rows.values())[:2]
    for name, (_, est, *_) in list(rows.items())[1:]:
        d = paired_difference(est, base_est)
        print(f"paired, {name} - baseline: {d.mean:+.2f} ± {d.stderr:.2f} nats per image "
              f"(higher on {d.fraction_higher:.1%} of the images)")
    print(f"figure: {completions_figure(dataset, cvae, base, args.figure)}")


if __name__ == "__main__":
    main()
