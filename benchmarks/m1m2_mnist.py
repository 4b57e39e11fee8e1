"""M1+M2 (Kingma, Rezende, Mohamed, Welling 2014) on MNIST with 100 labels: test classification error.

M1 is the suite's VAE (models/vae.py, ``vae`` + ``diag``: Kingma et al.'s 784-600-600 softplus
encoder and decoder, z 50, Bernoulli pixels) fit without labels on all 50,000 training images
(dynamically binarized) for ``--m1-epochs`` epochs. Its posterior means E[z1 | x] replace the
pixels of every split (pyrovae/data/features.py: the training images binarized once, seed 0, as
the test images are). M2 (models/m2.py with ``likelihood="gaussian"``, a learned scale per
feature; guides/m2.py; objective ``enum``) is then fit on the features with 100 labels, the same
labelled rows as ``mnist-100labels-seed{0,1,2}`` (pyrovae/data/semisupervised.py's
``semi_supervised`` on the feature data set: the balanced draw reads only the labels), every other
training image unlabelled, the stream and alpha as there (labelled rows repeated to a tenth of an
epoch; ``alpha = --alpha-scales`` times the paper's 0.1 N, per labelled row). Beside each M2, the
**baseline**: the same classifier network trained on the 100 labelled feature vectors alone
(cross-entropy, the same number of Adam steps and learning rate), so the gain from the unlabelled
rows is measured at equal budget and on the same features. Prints one JSON row per fit, then per
alpha the mean and sample standard deviation over the draws and the paired difference
(M2 - baseline, mean +- standard error over the draws).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/m1m2_mnist.py --m2-init torch   # docs/semi-supervised.md's M1+M2 table
    OMP_NUM_THREADS=1 python benchmarks/m1m2_mnist.py --m1-epochs 1 --m2-epochs 1 --seeds 0 --alpha-scales 1   # smoke run

That table is from torch's layers for M1 and M2 (``--m1-init torch``, this script's default, and
``--m2-init torch``); without ``--m2-init`` M2 starts from its default: torch's layers for its
Gaussian likelihood (burda until 2026-12-07, measured against it in docs/semi-supervised.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit
from pyrovae.data.datasets import DataSet, load_dataset
from pyrovae.data.features import encoded_features
from pyrovae.data.semisupervised import semi_supervised
from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.m2 import M2
from pyrovae.models.vae import VAE

from _classifier import error, fit_labelled_classifier  # benchmarks/_classifier.py


def first(split: dict, n: int) -> dict:
    return {k: v[:n] for k, v in split.items()}


def fit_m1(mnist: DataSet, args) -> tuple:
    """The VAE on all training images (no labels); returns the feature data set and seconds."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    sizes = dict(x_dim=mnist.x_dim, z_dim=args.m1_z_dim, hidden_dims=tuple(args.m1_hidden_dims), activation="softplus")
    model, guide = VAE(**sizes), DiagNormalGuide(**sizes)
    images = dataclasses.replace(mnist, train={"x": mnist.train["x"]}, valid=first({"x": mnist.valid["x"]}, args.num_valid))
    t0 = time.perf_counter()
    result = fit(model, guide, images, epochs=args.m1_epochs, batch_size=100, lr=args.lr, seed=0, progress=False,
                 init=args.m1_init)
    seconds = time.perf_counter() - t0
    features = encoded_features(mnist, guide, seed=0, name="mnist-m1features")
    return features, seconds, result.metrics[-1].get("valid_elbo")


def main():
    p = _harness.parser(__doc__.splitlines()[0], z_dim=50, hidden_dims=[500], lr=1e-3, json=None)
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--m1-epochs", type=int, default=8)
    p.add_argument("--m1-hidden-dims", type=int, nargs="+", default=[600, 600])
    p.add_argument("--m1-z-dim", type=int, default=50)
    p.add_argument("--m1-init", default="torch", choices=["torch", "glorot", "burda"],
                   help="how M1's weights start (fit's init; burda: the decoder at the data's mean)")
    p.add_argument("--m2-epochs", type=int, default=8)
    p.add_argument("--m2-init", default=None, choices=["torch", "glorot", "burda"],
                   help="how M2's weights start (fit's init; default: M2's own, torch for its Gaussian likelihood)")
    p.add_argument("--alpha-scales", type=float, nargs="+", default=[1.0, 50.0],
                   help="alpha = each of these times the paper's 0.1 N (one M2 per scale and draw)")
    p.add_argument("--num-valid", type=int, default=1000, help="validation rows for the per-epoch ELBO")
    p.add_argument("--features", default=None, help="save M1's features here, or load them if the file exists")
    args = p.parse_args()

    print(f"M1+M2 on MNIST, {args.labels} labels: M1 {args.m1_hidden_dims} z {args.m1_z_dim}, {args.m1_epochs} epochs; "
          f"M2 {args.hidden_dims} z {args.z_dim}, {args.m2_epochs} epochs; init M1 {args.m1_init}, M2 {args.m2_init or 'default'}; batch 100, Adam {args.lr}; "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    m1 = {}
    if args.features and os.path.exists(args.features):
        saved = torch.load(args.features)
        features, m1 = DataSet(**saved["dataset"]), saved["m1"]
        print(f"M1 features loaded from {args.features}", flush=True)
    else:
        features, seconds, valid_elbo = fit_m1(load_dataset("mnist"), args)
        m1 = {"seconds": seconds, "valid_elbo": valid_elbo}
        if args.features:
            torch.save({"dataset": dataclasses.asdict(features), "m1": m1}, args.features)
    print(json.dumps({"m1": m1, "feature_std": float(features.train["x"].std(0).mean())}), flush=True)
    test = features.test

    results = []
    for seed in args.seeds:
        data = semi_supervised(features, args.labels, seed=seed)
        data = dataclasses.replace(data, valid=first(data.valid, args.num_valid))
        base_error = None
        for scale in args.alpha_scales:
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            sizes = dict(data.dims(), z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims), activation="softplus")
            model, guide = M2(**sizes, likelihood="gaussian"), M2Guide(**sizes)
            t0 = time.perf_counter()
            result = fit(model, guide, data, objective=EnumELBO(alpha=data.paper_alpha * scale),
                         epochs=args.m2_epochs, batch_size=100, lr=args.lr, seed=seed, progress=False,
                         init=args.m2_init)
            seconds = time.perf_counter() - t0
            guide.eval()
            steps = result.metrics[-1]["step"]
            if base_error is None:  # one baseline per draw, at the first run's number of steps
                base = fit_labelled_classifier(data.labelled_rows(), args.hidden_dims, data.num_classes, args.lr, seed, steps)
                base_error = error(base, test)
            row = {"seed": seed, "alpha_scale": scale, "alpha": data.paper_alpha * scale, "repeats": data.repeats,
                   "unlabelled": data.num_unlabelled, "steps": steps, "seconds": seconds,
                   "m2_error": error(guide.classify, test), "baseline_error": base_error,
                   "valid_elbo": result.metrics[-1].get("valid_elbo")}
            results.append(row)
            print(json.dumps(row), flush=True)

    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))
    print("\nalpha scale | M1+M2 test error (%) | baseline, 100 labelled features only (%) | M2 - baseline (paired) | draws")
    for scale in args.alpha_scales:
        rows = [r for r in results if r["alpha_scale"] == scale]
        m2, base = [r["m2_error"] for r in rows], [r["baseline_error"] for r in rows]
        diff = [a - b for a, b in zip(m2, base)]
        print(f"{scale:g} | {statistics.mean(m2):.2f} ± {sd(m2):.2f} | {statistics.mean(base):.2f} ± {sd(base):.2f} "
              f"| {statistics.mean(diff):+.2f} ± {sd(diff) / len(diff) ** 0.5:.2f} (se) | {len(rows)}")
    _harness.write_json(args.json, {"args": vars(args), "m1": m1, "results": results})


if __name__ == "__main__":
    main()
