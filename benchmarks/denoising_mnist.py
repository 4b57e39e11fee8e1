"""The denoising criterion (Im, Ahn, Memisevic, Bengio 2017) against the plain VAE on MNIST.

The same generative model (784-h-h-z, tanh, Bernoulli; the same initial decoder weights),
the same encoder sizes and the same budget (epochs, batch 100, Adam, learning rate, batch
order) for every run on dynamically binarized MNIST; the only difference is the guide:
``diag`` (plain VAE) or ``denoising`` wrapping ``diag``, which encodes a salt-and-pepper
corrupted copy of each training image (one corruption per image per step). Scored by
importance sampling on the clean test images (the denoising guide is in eval mode: it
proposes from the uncorrupted image), K samples per image, and the per-image difference to
the plain VAE on the same images (paired standard error). For the denoising runs the last
column scores the same images with the proposal the encoder was trained on: q(z | x~) for
one salt-and-pepper corruption x~ of each test image (a valid proposal with a known density),
which separates a worse decoder from a mismatched proposal. ``--train-size N`` trains on the
first N images only, where a regularizer has overfitting to prevent.

    OMP_NUM_THREADS=1 python benchmarks/denoising_mnist.py --data-dir $PYROVAE_DATA \\
        --epochs 30 --num-samples 1000 --test-size 1000 --noise-levels 0.1 0.25

Not a test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pyro
import torch

import _harness  # benchmarks/_harness.py
import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.guides.denoising import NOISES, DenoisingGuide, corrupt
from pyrovae.nn import INITS
from pyrovae.models import VAE
from pyrovae.evaluation.compare import paired_difference


@torch.no_grad()
def proposal_estimates(model, encode, x, x_in, num_samples, batch_size=100):
    """Per image, log p(x) importance-sampled and the ELBO (the mean log-weight), both from
    the same K draws of the proposal ``encode(x_in)`` (the clean image, or one corruption)."""
    lls, elbos = [], []
    for start in range(0, len(x), batch_size):
        xb, xi = x[start:start + batch_size], x_in[start:start + batch_size]
        q = encode(xi)
        z = q.sample((num_samples,))
        log_w = model.prior(len(xb)).log_prob(z) + model.likelihood(z).log_prob(xb) - q.log_prob(z)
        lls.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
        elbos.append(log_w.mean(0))
    return torch.cat(lls).double(), torch.cat(elbos).double()


def run_one(noise_level, dataset, test, args):
    sizes = {"x_dim": dataset.x_dim, "z_dim": args.z_dim, "hidden_dims": tuple(args.hidden_dims)}
    pyro.clear_param_store()
    torch.manual_seed(args.seed)  # the same decoder initialization for every run
    model = VAE(**sizes)
    torch.manual_seed(args.seed + 1)  # and the same encoder initialization
    if noise_level == 0:
        guide = DiagNormalGuide(**sizes)
    else:
        guide = DenoisingGuide(**sizes, noise=args.noise, noise_level=noise_level, base="diag")
    t0 = time.perf_counter()
    result = pyrovae.fit(model, guide, dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, progress=False, valid_data={k: v[:100] for k, v in dataset.valid.items()},
                         init=args.init, objective="elbo")  # the same objective for the plain and denoising guides
    train_seconds = time.perf_counter() - t0
    pyro.set_rng_seed(args.seed)
    t0 = time.perf_counter()
    estimate = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples)
    eval_seconds = time.perf_counter() - t0
    x = test["x"]
    base = guide if noise_level == 0 else guide.base
    guide.eval()
    torch.manual_seed(args.seed)
    _, elbo = proposal_estimates(model, base.encode, x, x, args.num_samples)  # the clean bound, per image
    noisy = noisy_elbo = None
    if noise_level > 0:
        # the same with the proposal the encoder was trained on: q(z | x~) for one corruption
        # x~ of each test image (still a valid proposal, its density known): the bound the
        # denoising criterion maximizes, evaluated on test images
        torch.manual_seed(args.seed)
        x_tilde = corrupt(x, guide.noise, guide.noise_level)
        noisy, noisy_elbo = proposal_estimates(model, base.encode, x, x_tilde, args.num_samples)
    return {"noise": "none" if noise_level == 0 else args.noise, "noise_level": noise_level,
            "eval_seconds": eval_seconds, "init": args.init or "default",
            "test_ll_noisy_proposal": None if noisy is None else float(noisy.mean()),
            "per_datapoint_noisy": noisy, "per_datapoint_elbo": elbo, "per_datapoint_noisy_elbo": noisy_elbo,
            "train_seconds": train_seconds,
            "train_loss": result.metrics[-1]["train_loss"], "test_elbo": float(elbo.mean()),
            "test_ll": estimate.log_likelihood, "test_ll_stderr": estimate.stderr,
            "per_datapoint": estimate.per_datapoint.detach().double()}


def table(rows, args, machine) -> str:
    plain = next((r for r in rows if r["noise_level"] == 0), None)
    lines = [
        f"Dynamically binarized MNIST; model z={args.z_dim}, hidden {tuple(args.hidden_dims)} tanh, Bernoulli; "
        f"encoder the same sizes; {args.epochs} epochs of the first {args.num_train} training images, batch "
        f"{args.batch_size}, Adam lr {args.lr}, seed {args.seed}, init {args.init or 'the default'}; test log p(x) "
        f"and ELBO with K={args.num_samples} on the first {args.test_size} test images. {machine}.",
        "",
    ]

    def versus(key, row):
        if plain is None or row is plain or row.get(key) is None:
            return ""
        d = paired_difference(row[key], plain[key])
        return f"{d.mean:+.3f} ± {d.stderr:.3f}"

    cells = []
    for r in rows:
        name = "diag (plain VAE)" if r["noise_level"] == 0 else f"denoising(diag), {r['noise']}"
        noisy_vs_plain = ""
        if plain is not None and r.get("per_datapoint_noisy") is not None:
            d = paired_difference(r["per_datapoint_noisy"], plain["per_datapoint"])
            noisy_vs_plain = f"{d.mean:+.3f} ± {d.stderr:.3f}"
        elbo_noisy = ""
        if plain is not None and r.get("per_datapoint_noisy_elbo") is not None:
            d = paired_difference(r["per_datapoint_noisy_elbo"], plain["per_datapoint_elbo"])
            elbo_noisy = f"{d.mean:+.3f} ± {d.stderr:.3f}"
        cells.append([name, f"{r['noise_level']:g}", f"{r['train_seconds']:.0f}", f"{r['train_loss']:.2f}",
                      f"{r['test_elbo']:.2f}", versus("per_datapoint_elbo", r), elbo_noisy,
                      f"{r['test_ll']:.2f} ± {r['test_ll_stderr']:.2f}", versus("per_datapoint", r), noisy_vs_plain])
    lines.append(_harness.table(["guide", "rate", "train s", "final train loss", "test ELBO (clean x)",
                                 "ELBO - plain's (paired s.e.)", "ELBO with q(z given x~) - plain's",
                                 "test log p(x) (± s.e.)", "log p(x) - plain's (paired s.e.)",
                                 "log p(x) with q(z given x~) - plain's"], cells))
    return "\n".join(lines) + "\n"


def main():
    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, epochs=10, batch_size=100, lr=1e-3, z_dim=50,
                        hidden_dims=[200, 200], num_samples=1000, test_size=1000, train_size=None, seed=0, threads=1,
                        json=None)
    p.add_argument("--noise-levels", type=float, nargs="+", default=[0.1, 0.25],
                   help="corruption rates (or Gaussian standard deviations) of the denoising runs (the plain VAE, "
                        "rate 0, always runs)")
    p.add_argument("--noise", default="salt_and_pepper", choices=NOISES,
                   help="the corruption (guides/denoising.py; salt_and_pepper_im: Im et al.'s code's)")
    p.add_argument("--init", default=None, choices=INITS, help="the weights' start (default: fit's, the model's)")
    args = p.parse_args()

    machine = _harness.start(args)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    if args.train_size:
        dataset = dataclasses.replace(dataset, train={k: v[: args.train_size] for k, v in dataset.train.items()})
    args.num_train = len(dataset.train["x"])
    test = {"x": dataset.test["x"][: args.test_size]}
    rows = []
    for level in [0.0] + [lv for lv in args.noise_levels if lv > 0]:
        rows.append(run_one(level, dataset, test, args))
        print(json.dumps(_harness.summary(rows[-1])), flush=True)
        _harness.write_json(args.json, rows)
    print(table(rows, args, machine))


if __name__ == "__main__":
    main()
