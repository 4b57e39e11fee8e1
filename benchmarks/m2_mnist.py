"""Semi-supervised M2 (Kingma, Rezende, Mohamed, Welling 2014) on MNIST: test classification error.

For each number of labels (``--labels``, default 100 and 3000, ten per class and up, balanced)
and each label draw (``--seeds``), it fits M2 (models/m2.py, guides/m2.py) with the ``enum``
objective (y summed out exactly on unlabelled rows) on the labelled rows plus an unlabelled pool
of ``--unlabelled`` training images (a subset, to fit the budget; 47000 with 3000 labels is all
of them, as ``pyrovae fit --data mnist-3000labels``), for ``--epochs`` epochs (batch ``--batch-size``,
default 100, Adam ``--lr``, seed = the label draw), and prints the classification error of q(y | x) on the 10,000
test images. The pair's sizes, alpha, the learning rate and the initialisation default to what
``pyrovae fit --model m2`` uses when not told (:func:`fit_defaults`, read from the registry:
z 50, one hidden layer of 500 softplus units, alpha 50 per labelled row, Adam 1e-3, Burda et
al.'s initialisation); ``--alpha-scale S`` sets alpha to S times the paper's 0.1 N in per-row
units (pyrovae/data/semisupervised.py; S = 1 is the paper's); ``--repeats R`` shows each labelled
row R times an epoch instead of the data set's default (a tenth of the stream, at least 10 times). Beside it, the **baseline**: the
same classifier network trained on the labelled rows alone (cross-entropy, the same number of
Adam steps, the same learning rate, the same dynamically binarized inputs; always 100 labelled
rows a step, whatever M2's ``--batch-size``), so the gain from the
unlabelled images is measured at equal budget. ``--baseline-steps N ...`` trains it again for N steps each
and pairs M2 with those too (an ablation that changes M2's steps keeps the same baseline). Then the mean and the spread (sample standard
deviation) over the draws, the paired difference (M2 - baseline) over the draws and, within each
draw, paired on the test images (McNemar's: the images only one of the two gets wrong, an exact
p-value), and, for the first run of each label count, the test log-likelihood log p(x)
(importance-sampled, y drawn from the classifier and z from q(z | x, y), K = ``--num-samples``)
on the first ``--num-test`` test images.

    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 100 --seeds 0 1 2 3 4 --num-samples 0   # the defaults, 100 labels
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 3000 --unlabelled 47000 --num-samples 0  # 3000 labels, all images
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 3000 --unlabelled 47000 --seeds 0 --num-samples 0 --repeats 16 --baseline-steps 5300
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 3000 --unlabelled 47000 --seeds 0 --num-samples 0 --repeats 16 --epochs 6 --baseline-steps 5300 2880   # equal steps
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --alpha-scale 1 --init torch   # the older table (paper's alpha)
    OMP_NUM_THREADS=1 python benchmarks/m2_mnist.py --labels 100 --seeds 0 --epochs 1 --unlabelled 2000 --num-test 100 --num-samples 100
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import statistics
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.guides.base import objective_name_of
from pyrovae.nn.layers import default_init
from pyrovae.registry import constructor_options, get_guide, get_model, get_objective
from pyrovae.training.fit import default_lr
from pyrovae.data.datasets import load_dataset
from pyrovae.data.semisupervised import semi_supervised
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.m2 import M2

from _classifier import fit_labelled_classifier, paired_error_difference, wrong  # benchmarks/_classifier.py


def fit_defaults() -> dict:
    """What ``pyrovae fit --model m2`` uses where it is not told, read from the registry: the
    ``m2`` model's sizes and activation, its guide's objective's ``alpha``, and fit's learning
    rate, initialisation and batch size for the model (:func:`~pyrovae.training.fit.default_lr`,
    :func:`~pyrovae.nn.layers.default_init`)."""
    model = get_model("m2")
    options = {name: p.default for name, p in constructor_options(model).items()}
    objective = get_objective(objective_name_of(get_guide(model.guide_name)))
    return {"z_dim": options["z_dim"], "hidden_dims": list(options["hidden_dims"]),
            "activation": options["activation"], "alpha": constructor_options(objective)["alpha"].default,
            "lr": default_lr(model), "init": default_init(model),
            "batch_size": inspect.signature(fit).parameters["batch_size"].default}


def alpha_of(data, args) -> float:
    """The classifier weight per labelled row: ``--alpha-scale`` times the paper's where given, else ``--alpha``."""
    return data.paper_alpha * args.alpha_scale if args.alpha_scale is not None else args.alpha


def m2_data(base, num_labels, seed, args):
    """The semi-supervised set of one run: ``num_labels`` labels of ``base`` drawn by ``seed``, the first
    ``--unlabelled`` pool images, each label ``--repeats`` times an epoch (None: the data set's default),
    the first ``--num-valid`` validation images."""
    data = semi_supervised(base, num_labels, seed=seed, unlabelled=args.unlabelled, repeats=args.repeats)
    return dataclasses.replace(data, valid={k: v[:args.num_valid] for k, v in data.valid.items()})


def fit_m2(data, args, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    sizes = dict(data.dims(), z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims), activation=args.activation)
    model, guide = M2(**sizes), M2Guide(**sizes)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(model, guide, data, objective=EnumELBO(alpha=alpha_of(data, args)),
                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, progress=False, init=args.init)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    model.eval(), guide.eval()
    return model, guide, result, seconds, cpu_seconds


def build_parser():
    """The script's flags; the pair's, alpha, lr and init default to :func:`fit_defaults`."""
    d = fit_defaults()
    p = _harness.parser(__doc__.splitlines()[0], epochs=10, batch_size=d["batch_size"], lr=d["lr"], z_dim=d["z_dim"], hidden_dims=d["hidden_dims"],
                        num_samples=1000, json=None)
    p.add_argument("--labels", type=int, nargs="+", default=[100, 3000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--unlabelled", type=int, default=10000,
                   help="unlabelled training images kept (of the 50,000 less the labels; default: %(default)s)")
    p.add_argument("--activation", default=d["activation"], help="the networks' nonlinearity (default: %(default)s)")
    p.add_argument("--init", default=d["init"], choices=["torch", "glorot", "burda"],
                   help="M2's initialisation (default: fit's, %(default)s; the older tables used torch)")
    weight = p.add_mutually_exclusive_group()
    weight.add_argument("--alpha", type=float, default=d["alpha"],
                        help="alpha per labelled row (default: the enum objective's, %(default)s)")
    weight.add_argument("--alpha-scale", type=float, default=None,
                        help="alpha = this times the paper's 0.1 N instead (1: the paper's)")
    p.add_argument("--repeats", type=int, default=None,
                   help="times each labelled row appears in an epoch (default: the data set's, a tenth of the "
                        "stream and at least 10: 10 at 3000 labels with 47,000 unlabelled, and at 100 with 10,000)")
    p.add_argument("--baseline-steps", type=int, nargs="*", default=[],
                   help="also train the baseline for these numbers of Adam steps, each paired with M2 "
                        "(the main baseline always has M2's number of steps)")
    p.add_argument("--num-valid", type=int, default=1000, help="validation images for the per-epoch ELBO")
    p.add_argument("--num-test", type=int, default=1000, help="test images for log p(x)")
    return p


def main():
    args = build_parser().parse_args()

    mnist = load_dataset("mnist")
    test = mnist.test  # binarized once (seed 0), all 10,000 images
    weight = f"{args.alpha_scale:g} x the paper's" if args.alpha_scale is not None else f"{args.alpha:g}"
    print(f"M2 on MNIST: {args.unlabelled} unlabelled training images, {args.epochs} epochs, batch {args.batch_size}, "
          f"Adam {args.lr}, z {args.z_dim}, hidden {args.hidden_dims} {args.activation}, init {args.init}, "
          f"alpha {weight}, "
          f"{torch.get_num_threads()} thread(s)")
    results = []
    for num_labels in args.labels:
        for seed in args.seeds:
            data = m2_data(mnist, num_labels, seed, args)
            model, guide, result, seconds, cpu_seconds = fit_m2(data, args, seed)
            steps = result.metrics[-1]["step"]
            base = fit_labelled_classifier(data.labelled_rows(), args.hidden_dims, data.num_classes, args.lr, seed, steps,
                                           binarize=True)
            m2_wrong, base_wrong = wrong(guide.classify, test), wrong(base, test)
            row = {"labels": num_labels, "seed": seed, "alpha": alpha_of(data, args),
                   "repeats": data.repeats, "steps": steps, "seconds": seconds, "cpu_seconds": cpu_seconds,
                   "m2_error": 100 * float(m2_wrong.float().mean()),
                   "baseline_error": 100 * float(base_wrong.float().mean()),
                   "paired": paired_error_difference(m2_wrong, base_wrong),
                   "valid_elbo": result.metrics[-1].get("valid_elbo")}
            if args.num_samples and seed == args.seeds[0]:
                pyro.set_rng_seed(0)
                est = log_likelihood(model, guide, {"x": test["x"][:args.num_test]}, num_samples=args.num_samples)
                row.update(log_px=est.log_likelihood, log_px_stderr=est.stderr, elbo=est.elbo)
            row["other_baselines"] = []
            for other in args.baseline_steps:
                other_wrong = wrong(fit_labelled_classifier(data.labelled_rows(), args.hidden_dims, data.num_classes,
                                                            args.lr, seed, other, binarize=True), test)
                row["other_baselines"].append({"steps": other, "error": 100 * float(other_wrong.float().mean()),
                                               "paired": paired_error_difference(m2_wrong, other_wrong)})
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\nlabels | M2 test error (%) | baseline, labelled only (%) | M2 - baseline | draws | s per epoch (CPU)")
    for num_labels in args.labels:
        rows = [r for r in results if r["labels"] == num_labels]
        m2, base = [r["m2_error"] for r in rows], [r["baseline_error"] for r in rows]
        diff = [a - b for a, b in zip(m2, base)]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))
        print(f"{num_labels} | {statistics.mean(m2):.2f} ± {sd(m2):.2f} | {statistics.mean(base):.2f} ± {sd(base):.2f} "
              f"| {statistics.mean(diff):+.2f} ± {sd(diff) / len(diff) ** 0.5:.2f} (se) | {len(rows)} "
              f"| {statistics.mean(r['seconds'] for r in rows) / args.epochs:.1f} "
              f"({statistics.mean(r['cpu_seconds'] for r in rows) / args.epochs:.1f})")
        for r in rows:
            q = r["paired"]
            print(f"  draw {r['seed']}: M2 - baseline {q['diff']:+.2f} ± {q['stderr']:.2f} points, paired on the "
                  f"{len(test['y'])} test images (only M2 wrong on {q['a_only']}, only the baseline on {q['b_only']}; "
                  f"McNemar p = {q['p']:.2g})")
            for o in r["other_baselines"]:
                q = o["paired"]
                print(f"  draw {r['seed']}: against the baseline at {o['steps']} steps ({o['error']:.2f}%): "
                      f"M2 - baseline {q['diff']:+.2f} ± {q['stderr']:.2f} (only M2 wrong on {q['a_only']}, only "
                      f"the baseline on {q['b_only']}; McNemar p = {q['p']:.2g})")
        for r in rows:
            if "log_px" in r:
                print(f"  log p(x), first {args.num_test} test images, K={args.num_samples}: "
                      f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f} nats (ELBO {r['elbo']:.2f})")
    _harness.write_json(args.json, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
