"""Semi-supervised M2 (Kingma, Rezende, Mohamed, Welling 2014) on MNIST: test classification error.

For each number of labels (``--labels``, default 100 and 3000, ten per class and up, balanced)
and each label draw (``--seeds``), it fits M2 (models/m2.py, guides/m2.py) with the ``enum``
objective (y summed out exactly on unlabelled rows, alpha = the paper's 0.1 N in per-row units,
pyrovae/data/semisupervised.py) on the labelled rows plus an unlabelled pool of
``--unlabelled`` training images (a subset, to fit the budget), for ``--epochs`` epochs (batch
100, Adam ``--lr``, seed = the label draw), and prints the classification error of
q(y | x) on the 10,000 test images. Beside it, the **baseline**: the same classifier network
trained on the labelled rows alone (cross-entropy, the same number of Adam steps, the same
learning rate, the same dynamically binarized inputs), so the gain from the unlabelled images
is measured at equal budget. Then the mean and the spread (sample standard deviation) over the
draws, the paired difference (M2 - baseline) over the draws and, within each draw, paired on
the test images (McNemar's: the images only one of the two gets wrong, an exact p-value), and,
for the first run of each label count, the test log-likelihood log p(x) (importance-sampled, y drawn from the classifier
and z from q(z | x, y), K = ``--num-samples``) on the first ``--num-test`` test images.

    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py                       # docs/semi-supervised.md's table (about 30 min, 1 thread)
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 100 --alpha-scale 50 --num-samples 0  # alpha 50x the paper's
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 100 --alpha 50 --num-samples 0        # the enum default
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 100 --seeds 0 --epochs 1 --unlabelled 2000 --num-test 100 --num-samples 100
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.data.semisupervised import semi_supervised
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.m2 import M2

from _classifier import fit_labelled_classifier, paired_error_difference, wrong  # benchmarks/_classifier.py


def alpha_of(data, args) -> float:
    """The classifier weight per labelled row: ``--alpha``, else ``--alpha-scale`` times the paper's."""
    return args.alpha if args.alpha is not None else data.paper_alpha * args.alpha_scale


def fit_m2(data, args, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    sizes = dict(data.dims(), z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims), activation="softplus")
    model, guide = M2(**sizes), M2Guide(**sizes)
    t0 = time.perf_counter()
    result = fit(model, guide, data, objective=EnumELBO(alpha=alpha_of(data, args)),
                 epochs=args.epochs, batch_size=100, lr=args.lr, seed=seed, progress=False, init=args.init)
    seconds = time.perf_counter() - t0
    model.eval(), guide.eval()
    return model, guide, result, seconds


def main():
    p = _harness.parser(__doc__.splitlines()[0], epochs=10, lr=1e-3, z_dim=50, hidden_dims=[500], num_samples=1000,
                        json=None)
    p.add_argument("--labels", type=int, nargs="+", default=[100, 3000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--unlabelled", type=int, default=10000, help="unlabelled training images kept (of about 50,000)")
    p.add_argument("--alpha-scale", type=float, default=1.0, help="alpha = this times the paper's 0.1 N")
    p.add_argument("--init", default=None, choices=["torch", "glorot", "burda"],
                   help="M2's initialisation (default: fit's, burda; the tables measured before it was used torch)")
    p.add_argument("--alpha", type=float, default=None,
                   help="alpha per labelled row, instead of --alpha-scale (the enum objective's default: 50)")
    p.add_argument("--num-valid", type=int, default=1000, help="validation images for the per-epoch ELBO")
    p.add_argument("--num-test", type=int, default=1000, help="test images for log p(x)")
    args = p.parse_args()

    mnist = load_dataset("mnist")
    test = mnist.test  # binarized once (seed 0), all 10,000 images
    print(f"M2 on MNIST: {args.unlabelled} unlabelled training images, {args.epochs} epochs, batch 100, "
          f"Adam {args.lr}, z {args.z_dim}, hidden {args.hidden_dims}, {torch.get_num_threads()} thread(s)")
    results = []
    for num_labels in args.labels:
        for seed in args.seeds:
            data = semi_supervised(mnist, num_labels, seed=seed, unlabelled=args.unlabelled)
            data = dataclasses.replace(data, valid={k: v[:args.num_valid] for k, v in data.valid.items()})
            model, guide, result, seconds = fit_m2(data, args, seed)
            steps = result.metrics[-1]["step"]
            base = fit_labelled_classifier(data.labelled_rows(), args.hidden_dims, data.num_classes, args.lr, seed, steps,
                                           binarize=True)
            m2_wrong, base_wrong = wrong(guide.classify, test), wrong(base, test)
            row = {"labels": num_labels, "seed": seed, "alpha": alpha_of(data, args),
                   "repeats": data.repeats, "steps": steps, "seconds": seconds,
                   "m2_error": 100 * float(m2_wrong.float().mean()),
                   "baseline_error": 100 * float(base_wrong.float().mean()),
                   "paired": paired_error_difference(m2_wrong, base_wrong),
                   "valid_elbo": result.metrics[-1].get("valid_elbo")}
            if args.num_samples and seed == args.seeds[0]:
                pyro.set_rng_seed(0)
                est = log_likelihood(model, guide, {"x": test["x"][:args.num_test]}, num_samples=args.num_samples)
                row.update(log_px=est.log_likelihood, log_px_stderr=est.stderr, elbo=est.elbo)
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\nlabels | M2 test error (%) | baseline, labelled only (%) | M2 - baseline | draws | s per epoch")
    for num_labels in args.labels:
        rows = [r for r in results if r["labels"] == num_labels]
        m2, base = [r["m2_error"] for r in rows], [r["baseline_error"] for r in rows]
        diff = [a - b for a, b in zip(m2, base)]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))
        print(f"{num_labels} | {statistics.mean(m2):.2f} ± {sd(m2):.2f} | {statistics.mean(base):.2f} ± {sd(base):.2f} "
              f"| {statistics.mean(diff):+.2f} ± {sd(diff) / len(diff) ** 0.5:.2f} (se) | {len(rows)} "
              f"| {statistics.mean(r['seconds'] for r in rows) / args.epochs:.1f}")
        for r in rows:
            q = r["paired"]
            print(f"  draw {r['seed']}: M2 - baseline {q['diff']:+.2f} ± {q['stderr']:.2f} points, paired on the "
                  f"{len(test['y'])} test images (only M2 wrong on {q['a_only']}, only the baseline on {q['b_only']}; "
                  f"McNemar p = {q['p']:.2g})")
        for r in rows:
            if "log_px" in r:
                print(f"  log p(x), first {args.num_test} test images, K={args.num_samples}: "
                      f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f} nats (ELBO {r['elbo']:.2f})")
    _harness.write_json(args.json, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
