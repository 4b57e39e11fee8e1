"""DRAW without attention (Gregor et al. 2015) and its learned prior (conceptual compression,
Gregor et al. 2016) on statically binarized MNIST: test log-likelihood, bits per step, and
reconstructions from the first k of T steps.

Each prior (``--priors``) is trained with the same budget (the first ``--train-size`` training
images, ``--epochs`` epochs, batch 100, Adam ``--lr``, seed 0, weights started by ``--init``); on ``--num-test`` evenly
spaced test images it prints log p(x), importance-sampled with the guide (K = ``--num-samples``), with
its standard error, the ELBO, the KL spent per step in bits (mean over the test images) and,
with two priors, the paired difference. It saves the figure docs/figures/draw-conceptual-compression.png:
test digits, then sigmoid(c_T) decoded from the posterior means of the first k steps, the
later latents set to the prior's mean, for k = 1..T; and the bits per step.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/draw_mnist.py --init torch --num-test 100   # the docs/draw.md prior table
    OMP_NUM_THREADS=1 python benchmarks/draw_mnist.py --train-size 1000 --epochs 1 --num-test 20 --num-samples 50
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pyro
import torch
import _harness  # benchmarks/_harness.py
from matplotlib.figure import Figure

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.evaluation.plots import image_grid, save_figure
from pyrovae.guides.draw import DRAWGuide
from pyrovae.models.draw import DRAW
from pyrovae.evaluation.compare import paired_difference
from pyrovae.nn import INITS

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "draw-conceptual-compression.png"


def train(train_x, prior: str, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sizes = dict(x_dim=train_x.shape[1], z_dim=args.z_dim, num_steps=args.num_steps, rnn_dim=args.rnn_dim)
    model, guide = DRAW(**sizes, prior=prior), DRAWGuide(**sizes)
    guide.bind_model(model)
    t0 = time.perf_counter()
    common = dict(batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False, device=args.device, init=args.init)
    if args.train_seconds is None:
        result = fit(model, guide, train_x, epochs=args.epochs, **common)
    else:  # as many epochs as fit in the time (resumed exactly from the run folder's checkpoint)
        folder = Path(tempfile.mkdtemp()) / "run"
        epoch = 0
        while epoch < args.epochs and (epoch == 0 or time.perf_counter() - t0 < args.train_seconds):
            epoch += 1
            result = fit(model, guide, train_x, epochs=epoch, out_dir=folder, resume=epoch > 1, figures=False, **common)
    model.eval(), guide.eval()
    return model, guide, result, time.perf_counter() - t0


def compression_figure(test_x, runs: dict, path: Path, num_images: int = 6) -> Path:
    """Per prior: rows of test digits (the truth, then k = 1..T steps decoded); below, bits per step."""
    num_steps = next(iter(runs.values()))[1].num_steps
    fig = Figure(figsize=(0.75 * (num_steps + 1) * len(runs) + 0.5, 0.75 * num_images + 2.6))
    x = test_x[:num_images]
    for col, (prior, (model, guide, bits)) in enumerate(runs.items()):
        rows = []
        for i in range(num_images):
            rows.append(x[i])
            rows += [guide.reconstruct(x[i:i + 1], k)[0] for k in range(1, num_steps + 1)]
        ax = fig.add_subplot(2, len(runs), col + 1)
        ax.imshow(image_grid(torch.stack(rows), (28, 28), ncol=num_steps + 1), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([14 + c * 29 for c in range(num_steps + 1)])
        ax.set_xticklabels(["x"] + [str(k) for k in range(1, num_steps + 1)], fontsize=7)
        ax.set_yticks([])
        ax.set_title(f"{prior} prior: first k steps from q, the rest the prior's mean", fontsize=8)
        ax = fig.add_subplot(2, len(runs), len(runs) + col + 1)
        ax.bar(range(1, num_steps + 1), bits.tolist(), color="tab:blue")
        ax.set_xlabel("step t", fontsize=8)
        ax.set_ylabel("KL(q || p) at step t, bits", fontsize=8)
        ax.set_title(f"{prior}: {float(bits.sum()):.1f} bits in all", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def main():
    p = _harness.parser(__doc__.split("\n\n")[0], train_size=10000, epochs=5, z_dim=10, lr=1e-3, num_samples=1000,
                        seed=0, batch_size=100, device="cpu", figure=FIGURE)
    p.add_argument("--priors", nargs="+", default=["standard", "learned"], choices=["standard", "learned"])
    p.add_argument("--init", choices=INITS, default=None,
                   help="how the weights start (default: the model's, the canvas at the data's mean; "
                        "docs/draw.md's prior table used torch)")
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--rnn-dim", type=int, default=200)
    p.add_argument("--num-test", type=int, default=200, help="N evenly spaced test images (paired)")
    p.add_argument("--train-seconds", type=float, default=None,
                   help="train each prior for at most --epochs epochs, stopping after the epoch that passes this many seconds")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    data = load_dataset("binarized-mnist", data_dir=os.environ.get("PYROVAE_DATA"))
    # evenly spaced test images: the first rows of this test set are not a fair sample (the first
    # six are all zeros; the first 200 have 16% more ink than the whole set and a much sharper mean image)
    spaced = torch.linspace(0, len(data.test["x"]) - 1, args.num_test).round().long()
    train_x, test_x = data.train["x"][:args.train_size], data.test["x"][spaced].to(args.device)
    print(f"binarized MNIST: first {len(train_x)} training images, {args.epochs} epochs, batch {args.batch_size}, "
          f"Adam {args.lr:g}, {args.device}" + (f", at most ~{args.train_seconds:g} s per prior" if args.train_seconds else "") + "; "
          f"T={args.num_steps}, z_dim={args.z_dim} per step, LSTMs of {args.rnn_dim}; "
          f"{torch.get_num_threads()} thread(s)")
    runs, estimates = {}, {}
    for prior in args.priors:
        model, guide, result, seconds = train(train_x, prior, args)
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        est = log_likelihood(model, guide, test_x, num_samples=args.num_samples, device=args.device)
        bits = guide.kl_per_step(test_x, num_samples=4).mean(0).cpu()  # (T,)
        runs[prior], estimates[prior] = (model, guide, bits), est
        print(f"\n{prior} prior: {len(result.metrics)} epochs in {seconds:.0f} s, last train loss {result.metrics[-1]['train_loss']:.2f}")
        print(f"  test log p(x) (K={est.num_samples}, {len(test_x)} evenly spaced test images): {est.log_likelihood:.2f} ± {est.stderr:.2f} "
              f"nats; ELBO {est.elbo:.2f}; eval {time.perf_counter() - t0:.0f} s")
        print("  KL per step, bits: " + " ".join(f"{b:.1f}" for b in bits.tolist()) +
              f"  (total {float(bits.sum()):.1f} bits = {float(bits.sum()) * 0.6931:.1f} nats)")
    if len(estimates) == 2:
        (a, ea), (b, eb) = estimates.items()
        d = paired_difference(eb, ea)
        print(f"\npaired, {b} - {a}: {d.mean:+.2f} ± {d.stderr:.2f} nats per image")
    print(f"figure: {compression_figure(test_x, runs, args.figure)}")


if __name__ == "__main__":
    main()
