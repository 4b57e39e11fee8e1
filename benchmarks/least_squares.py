"""The least-squares VAE with regularization (Ramachandra 2017) against the Gaussian VAE on
MNIST grey levels, at equal budget.

Pairs (the same sizes 784-h-h-z tanh, the same encoder, epochs, batch, Adam learning rate and
batch order, seed 0), trained on the first ``--train-size`` training images, grey levels
dequantized to ``(255 x + u) / 256``, ``u ~ U(0, 1)`` (a fixed draw per image):

- ``gaussian VAE``: ``vae`` with ``likelihood="gaussian"`` (a learned scale per pixel);
- ``least squares, lambda``: ``least-squares-vae`` (unit variance: the plain sum of squares,
  and the L2 penalty lambda/2 ||W||^2 per datapoint on the decoder's weights);
- ``least squares, no penalty``: the same with lambda = 0 (isolates the regularization).

Scored on the first ``--test-size`` test images (dequantized the same way): the squared
reconstruction error ``||x - f(mu(x))||^2`` per image (the decoder's mean at the encoder's
mean) and the importance-sampled log-density log p(x) (K ``--num-samples``; every pair is a
proper density on R^784), both paired per image against the Gaussian VAE; and the training
time (the paper reports faster training).

    OMP_NUM_THREADS=1 python benchmarks/least_squares.py --data-dir $PYROVAE_DATA \\
        --epochs 10 --train-size 10000 --num-samples 1000 --test-size 500

Not a test.
"""

from __future__ import annotations

import json
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.models.least_squares import LeastSquaresVAE
from pyrovae.evaluation.compare import paired_difference


def dequantize(x, seed):
    g = torch.Generator().manual_seed(seed)
    return (255 * x + torch.rand(x.shape, generator=g)) / 256


def build(name, sizes, args):
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    if name == "gaussian VAE":
        model = VAE(**sizes, likelihood="gaussian")
    else:
        lam = 0.0 if name.endswith("no penalty") else args.weight_decay
        model = LeastSquaresVAE(**sizes, scale=args.scale, weight_decay=lam)
    torch.manual_seed(args.seed + 1)
    return model, DiagNormalGuide(**sizes)


def run_one(name, train, test, args):
    sizes = {"x_dim": train.shape[1], "z_dim": args.z_dim, "hidden_dims": tuple(args.hidden_dims)}
    model, guide = build(name, sizes, args)
    t0 = time.perf_counter()
    result = pyrovae.fit(model, guide, {"x": train}, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, progress=False, **({"init": args.init} if args.init else {}),
                         **({"objective": args.objective} if args.objective else {}))
    seconds = time.perf_counter() - t0
    model.eval(), guide.eval()
    with torch.no_grad():
        recon = model.likelihood(guide.encode(test).mean).mean
        sq_err = ((test - recon) ** 2).sum(-1).double()
    pyro.set_rng_seed(args.seed)
    estimate = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples)
    return {"pair": name, "train_seconds": seconds, "train_loss": result.metrics[-1]["train_loss"],
            "sq_err": float(sq_err.mean()), "test_ll": estimate.log_likelihood, "test_ll_stderr": estimate.stderr,
            "test_elbo": estimate.elbo, "per_sq_err": sq_err, "per_datapoint": estimate.per_datapoint.detach().double()}


def paired(a, b):
    d = paired_difference(a, b)
    return f"{d.mean:+.2f} ± {d.stderr:.2f}"


DEFAULT = "each model's"


def table(rows, args, machine) -> str:
    base = rows[0]
    lines = [
        f"MNIST grey levels (dequantized), the first {args.train_size} training images; 784-"
        f"{'-'.join(map(str, args.hidden_dims))}-{args.z_dim} tanh, diagonal Gaussian encoder; {args.epochs} epochs, batch "
        f"{args.batch_size}, Adam lr {args.lr}, seed {args.seed}, init {args.init or DEFAULT}, objective "
        f"{args.objective or DEFAULT}; least squares: scale {args.scale}, lambda "
        f"{args.weight_decay}; scored on the first {args.test_size} test images (paired on the same images), log p(x) "
        f"with K={args.num_samples}. {machine}.",
        "",
        *_harness.header(["pair", "train s", "squared error per image", "minus the Gaussian VAE's (paired)",
                          "test ELBO", "test log p(x) ± s.e.", "minus the Gaussian VAE's (paired)"]),
    ]
    for r in rows:
        d_err = d_ll = ""
        if r is not base:
            d_err, d_ll = paired(r["per_sq_err"], base["per_sq_err"]), paired(r["per_datapoint"], base["per_datapoint"])
        lines.append(f"| {r['pair']} | {r['train_seconds']:.0f} | {r['sq_err']:.2f} | {d_err} | {r['test_elbo']:.1f} | "
                     f"{r['test_ll']:.1f} ± {r['test_ll_stderr']:.1f} | {d_ll} |")
    return "\n".join(lines) + "\n"


def main():
    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, epochs=10, batch_size=100, lr=1e-3, z_dim=20,
                        hidden_dims=[200, 200], num_samples=1000, test_size=500, train_size=10000, seed=0,
                        threads=1, json=None)
    p.add_argument("--scale", type=float, default=1.0, help="the least-squares model's fixed sigma")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="lambda")
    p.add_argument("--init", default=None, choices=["torch", "glorot", "burda"],
                   help="every pair's initialisation (default: each model's: torch's layers for both, the Gaussian VAE "
                        "since 2026-12-07, docs/vae.md#initialisation)")
    p.add_argument("--objective", default=None, choices=["elbo", "meanfield"],
                   help="every pair's objective (default: each pair's: meanfield, the closed-form KL, for both, the "
                        "diagonal guide's default with vae and least-squares-vae; elbo: the sampled KL)")
    args = p.parse_args()
    machine = _harness.start(args)
    data = load_dataset("mnist", data_dir=args.data_dir, binarize="none")
    train = dequantize(data.train["x"][: args.train_size], args.seed)
    test = dequantize(data.test["x"][: args.test_size], args.seed + 100)
    rows = []
    for name in ("gaussian VAE", f"least squares, lambda {args.weight_decay:g}", "least squares, no penalty"):
        rows.append(run_one(name, train, test, args))
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("per_")}), flush=True)
    _harness.write_json(args.json, rows)  # tensors as lists
    print(table(rows, args, machine))


if __name__ == "__main__":
    main()
