"""DRAW (no attention) at a reference implementation's budget, one setting changed at a time:
the test negative ELBO per image, paired with the reference's on the same test images.

One run per call (runs go side by side as separate processes): the first ``--train-size``
rows of binarized MNIST, ``--epochs`` epochs, batch 100, Adam ``--lr``, seed 0, T =
``--num-steps``, z ``--z-dim`` per step, LSTMs of ``--rnn-dim``, weights started by ``--init``
(None: the model's default). On ``--num-test`` evenly spaced test images it reports the
negative ELBO per image (the mean of ``--elbo-samples`` single-sample bounds), with
``--num-samples`` > 0 also the importance-sampled log p(x) on ``--is-test`` of them, and
the per-epoch curve of the test ELBO on ``--curve-test`` of them. ``--reference`` (the JSON of
the reference run, /work/ref/draw/run_equal_budget.py in docs/draw.md) adds the paired
difference, ours - reference, in nats of negative ELBO (its per-image figures are on the same
test images). ``--json`` writes the row; ``--pair A.json B.json`` prints the paired difference of two
runs already made (either may be the reference's).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/draw_ablation.py --init torch --json torch.json --reference ref_T10.json
    OMP_NUM_THREADS=1 python benchmarks/draw_ablation.py --train-size 500 --epochs 1 --num-test 20 --curve-test 10 --num-samples 0
"""

from __future__ import annotations

import json
import math
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.evaluation.log_likelihood import iter_log_weights
from pyrovae.guides.draw import DRAWGuide
from pyrovae.models.draw import DRAW
from pyrovae.nn import INITS, default_init


def per_image_neg_elbo(model, guide, x: torch.Tensor, samples: int) -> torch.Tensor:
    """``(N,)``: minus the mean over ``samples`` draws of the single-sample bound, per image."""
    with torch.no_grad():
        weights = torch.cat(list(iter_log_weights(model, guide, {"x": x}, samples)), 1)  # (S, N)
    return -weights.mean(0)


def paired(ours: dict, ref: dict) -> dict:
    """Ours - the reference, in nats of -ELBO per image, on the same test images (rows of
    this script's and the reference's JSON)."""
    def indices(row):  # rows written before the indices were recorded: N evenly spaced of the 10,000
        return row.get("test_indices") or torch.linspace(0, 9999, row["args"]["num_test"]).round().long().tolist()

    if indices(ours) != indices(ref):
        raise SystemExit("the two runs scored different test images")
    d = torch.tensor(ours["per_image_neg_elbo"]) - torch.tensor(ref["per_image_neg_elbo"])
    return {"mean": float(d.mean()), "se": float(d.std() / math.sqrt(len(d))), "reference_mean": ref["test_neg_elbo_mean"]}


def main():
    p = _harness.parser(__doc__.split("\n\n")[0], data_dir=_harness.DATA_DIR, train_size=10000, epochs=5, z_dim=10,
                        lr=1e-3, batch_size=100, num_samples=0, seed=0, threads=1, json=None)
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--rnn-dim", type=int, default=200)
    p.add_argument("--init", choices=INITS, default=None, help="how the weights start (default: the model's)")
    p.add_argument("--num-test", type=int, default=1000, help="N evenly spaced test images for the ELBO")
    p.add_argument("--elbo-samples", type=int, default=10)
    p.add_argument("--is-test", type=int, default=100, help="of those, this many (evenly spaced) for log p(x)")
    p.add_argument("--curve-test", type=int, default=200, help="of those, this many for the per-epoch test ELBO")
    p.add_argument("--reference", default=None, help="the reference run's JSON (per-image -ELBO, same images)")
    p.add_argument("--pair", nargs=2, metavar=("OURS", "REFERENCE"), default=None,
                   help="no training: the paired difference of two runs' JSON files")
    args = p.parse_args()
    if args.pair:
        a, b = (json.load(open(f)) for f in args.pair)
        d = paired(a, b)
        print(f"{args.pair[0]} - {args.pair[1]}: {d['mean']:+.2f} ± {d['se']:.2f} nats of -ELBO per image "
              f"({a['test_neg_elbo_mean']:.2f} vs {b['test_neg_elbo_mean']:.2f})")
        return
    machine = _harness.start(args)

    data = load_dataset("binarized-mnist", data_dir=args.data_dir)
    n_test = len(data.test["x"])
    spaced = torch.linspace(0, n_test - 1, args.num_test).round().long()
    train_x, test_x = data.train["x"][:args.train_size], data.test["x"][spaced]
    curve_x = test_x[torch.linspace(0, len(test_x) - 1, min(args.curve_test, len(test_x))).round().long()]

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sizes = dict(x_dim=train_x.shape[1], z_dim=args.z_dim, num_steps=args.num_steps, rnn_dim=args.rnn_dim)
    model, guide = DRAW(**sizes), DRAWGuide(**sizes)
    guide.bind_model(model)
    c0, w0 = time.process_time(), time.perf_counter()
    result = fit(model, guide, train_x, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                 init=args.init, progress=False, valid_data={"x": curve_x}, device="cpu")
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    model.eval(), guide.eval()
    pyro.set_rng_seed(args.seed)
    per = per_image_neg_elbo(model, guide, test_x, args.elbo_samples)
    row = {"machine": machine, "args": vars(args), "init": args.init or default_init(model),
           "cpu_s_per_epoch": cpu / args.epochs, "wall_s_per_epoch": wall / args.epochs,
           "curve": [{"epoch": m["epoch"], "train_neg_elbo": m["train_loss"], "test_neg_elbo": -m["valid_elbo"],
                      "seconds": m["seconds"]} for m in result.metrics],
           "test_neg_elbo_mean": float(per.mean()), "test_neg_elbo_se": float(per.std() / math.sqrt(len(per))),
           "per_image_neg_elbo": per.tolist()}
    print(f"{machine}; T={args.num_steps}, z {args.z_dim}, LSTMs {args.rnn_dim}, init {args.init or 'default'}, "
          f"lr {args.lr:g}, {args.epochs} epochs on {len(train_x)} images: {row['cpu_s_per_epoch']:.0f} s CPU / "
          f"{row['wall_s_per_epoch']:.0f} s wall per epoch (with a {len(curve_x)}-image test pass)")
    for c in row["curve"]:
        print(f"  epoch {c['epoch']}: train -ELBO {c['train_neg_elbo']:.2f}, test -ELBO ({len(curve_x)} images) "
              f"{c['test_neg_elbo']:.2f}")
    print(f"test -ELBO ({args.elbo_samples} draws per image, {len(per)} evenly spaced test images): "
          f"{row['test_neg_elbo_mean']:.2f} ± {row['test_neg_elbo_se']:.2f}")
    row["test_indices"] = spaced.tolist()
    if args.reference:
        ref = json.load(open(args.reference))
        row["paired_vs_reference"] = d = paired(row, ref)
        print(f"paired, ours - reference ({ref['repository']} {ref['commit'][:7]}): {d['mean']:+.2f} ± {d['se']:.2f} "
              f"nats of -ELBO per image (reference {d['reference_mean']:.2f})")
    if args.num_samples:
        sub = test_x[torch.linspace(0, len(test_x) - 1, min(args.is_test, len(test_x))).round().long()]
        pyro.set_rng_seed(args.seed)
        est = log_likelihood(model, guide, sub, num_samples=args.num_samples)
        row["log_px"] = {"mean": est.log_likelihood, "se": est.stderr, "num_images": len(sub), "K": args.num_samples}
        print(f"test log p(x) (K={args.num_samples}, {len(sub)} of them): {est.log_likelihood:.2f} ± {est.stderr:.2f}")
    if args.json:
        _harness.write_json(args.json, row)


if __name__ == "__main__":
    main()
