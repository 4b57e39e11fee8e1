"""The encoder gradient's signal-to-noise ratio against K for the plain, STL and DReG
estimators of the IWAE gradient (Rainforth et al. 2018; Tucker et al. 2018), and the test
log-likelihood after equal training at each K of ``--train-ks`` with each estimator of
``--estimators``.

1. Train a VAE (784-200-200-50, tanh, Bernoulli; diagonal Normal guide) on dynamically
   binarized MNIST (the first ``--train-size`` training images, default all) with ``iwae`` at
   each K of ``--train-ks`` for ``--epochs`` epochs, once per estimator: every run starts from
   the same initial weights and sees the same batches (same seed). The initial weights are the
   model's default init (Burda et al.'s) unless ``--init`` names another; ``--init torch``
   gives the figures docs/objectives.md measured before that was the default.
2. On the model trained with the plain gradient at the first K of ``--train-ks`` (skipped
   with ``--no-snr``), for K in ``--ks`` and each estimator: ``--reps`` independent
   gradient draws on one fixed batch of ``--snr-batch`` test images; per parameter
   ``SNR = |mean| / std`` over the draws, averaged over the guide's (encoder) parameters, and
   over the model's (decoder) for comparison (parameters whose gradient is zero on every draw,
   e.g. weights of always-black pixels, are left out).
3. The test log-likelihood of every trained pair by importance sampling (``--num-samples``),
   on the same ``--test-size`` test images, with standard errors, the paired difference from
   the plain gradient at the same K, and the guide's active units (Var_x E_q[z_j] > 0.01 on
   the same test images).

    OMP_NUM_THREADS=1 python benchmarks/iwae_gradients.py --data-dir $PYROVAE_DATA

The table at K = 5 and 50 of docs/objectives.md (equal budget at both K)::

    OMP_NUM_THREADS=1 python benchmarks/iwae_gradients.py --data-dir $PYROVAE_DATA --no-snr \
        --train-ks 5,50 --estimators plain,stl,dreg --train-size 10000 --valid-size 1000 --epochs 15 \
        --num-samples 5000

Prints a markdown table and writes ``--json``.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.infer.objectives import IWAE
from pyrovae.models import VAE
from pyrovae.evaluation.compare import paired_difference
from pyrovae.nn import INITS


def snr(model, guide, batch, k, gradient, reps, seed):
    """(encoder SNR, decoder SNR): per-parameter |mean| / std over ``reps`` gradient draws, averaged."""
    objective = IWAE(num_particles=k, gradient=gradient)
    q_params, p_params = list(guide.parameters()), list(model.parameters())
    pyro.set_rng_seed(seed)
    rows_q, rows_p = [], []
    for _ in range(reps):
        grads = torch.autograd.grad(objective(model, guide, batch), q_params + p_params)
        rows_q.append(torch.cat([g.reshape(-1) for g in grads[:len(q_params)]]).double())
        rows_p.append(torch.cat([g.reshape(-1) for g in grads[len(q_params):]]).double())
    out = []
    for rows in (torch.stack(rows_q), torch.stack(rows_p)):
        mean, std = rows.mean(0), rows.std(0)
        keep = std > 0
        out.append(float((mean[keep].abs() / std[keep]).mean()))
    return out


def main():
    p = _harness.parser(__doc__, data_dir=None, epochs=5, batch_size=100, lr=1e-3, z_dim=50, train_size=None,
                        num_samples=1000, test_size=1000, seed=0, json=None)
    p.add_argument("--train-ks", default="5", help="K of the iwae objective the pairs are trained with")
    p.add_argument("--estimators", default="plain,dreg", help="gradients to train with (plain first)")
    p.add_argument("--valid-size", type=int, default=None,
                   help="validation images fit monitors each epoch (default all 10,000)")
    p.add_argument("--no-snr", action="store_true", help="skip the SNR table")
    p.add_argument("--ks", default="1,5,50,500")
    p.add_argument("--reps", type=int, default=200, help="gradient draws per (K, estimator) for the SNR")
    p.add_argument("--snr-batch", type=int, default=8, help="test images in the SNR's fixed batch")
    p.add_argument("--init", default=None, choices=INITS,
                   help="the init of every trained pair (default: the model's, Burda et al.'s for the VAE; "
                        "--init torch gives the figures measured before that was the default)")
    args = p.parse_args()
    train_ks = [int(k) for k in args.train_ks.split(",")]
    estimators = args.estimators.split(",")
    if estimators[0] != "plain" or not set(estimators) <= {"plain", "stl", "dreg"}:
        p.error(f"--estimators must start with plain and name only plain, stl, dreg; got {args.estimators!r}")

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    dataset = dataclasses.replace(
        dataset, train={k: v[: args.train_size] for k, v in dataset.train.items()},
        valid={k: v[: args.valid_size] for k, v in dataset.valid.items()})
    torch.manual_seed(args.seed)
    hidden = (200, 200)
    start = VAE(784, args.z_dim, hidden), DiagNormalGuide(784, args.z_dim, hidden)
    init = {} if args.init is None else {"init": args.init}  # fit's default: the model's
    pairs, trained = {}, {}
    for k in train_ks:
        for name in estimators:
            m, g = copy.deepcopy(start[0]), copy.deepcopy(start[1])
            pyro.clear_param_store()
            t0 = time.perf_counter()
            result = pyrovae.fit(m, g, dataset, objective=IWAE(num_particles=k, gradient=name), epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False, **init)
            seconds = time.perf_counter() - t0
            pairs[(k, name)] = (m, g)
            trained[(k, name)] = {
                "seconds": seconds, "final_train_loss": result.metrics[-1]["train_loss"],
                "seconds_per_epoch": sum(r["seconds"] for r in result.metrics) / len(result.metrics)}
            print(f"trained K={k} {name}: {seconds:.0f} s ({trained[(k, name)]['seconds_per_epoch']:.1f} s/epoch "
                  f"of training), final train loss {trained[(k, name)]['final_train_loss']:.2f}", flush=True)

    ks = [int(k) for k in args.ks.split(",")]
    table = {}
    if not args.no_snr:
        model, guide = pairs[(train_ks[0], "plain")]
        batch = {"x": dataset.test["x"][: args.snr_batch]}
        for k in ks:
            for gradient in ("plain", "stl", "dreg"):
                t0 = time.perf_counter()
                table[(k, gradient)] = snr(model, guide, batch, k, gradient, args.reps, args.seed + k)
                print(f"K={k} {gradient}: encoder SNR {table[(k, gradient)][0]:.4f}, decoder SNR "
                      f"{table[(k, gradient)][1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    test = {"x": dataset.test["x"][: args.test_size]}
    lls, units, diffs = {}, {}, {}
    for key, (m, g) in pairs.items():
        t0 = time.perf_counter()
        pyro.set_rng_seed(args.seed)
        lls[key] = pyrovae.log_likelihood(m, g, test, num_samples=args.num_samples)
        units[key] = pyrovae.latent_monitors(m, g, test, max_datapoints=None).active_units
        print(f"K={key[0]} {key[1]}: {lls[key]} , {units[key]} active units "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for (k, name) in pairs:
        diff = paired_difference(lls[(k, name)], lls[(k, "plain")])
        diffs[(k, name)] = (diff.mean, diff.stderr)

    machine = _harness.machine()
    n_train = len(dataset.train["x"])
    print(f"\n{machine}; VAE 784-200-200-{args.z_dim}, init {args.init or 'default'}, {args.epochs} epochs of iwae on {n_train} training images, "
          f"batch {args.batch_size}, lr {args.lr}")
    if table:
        print(f"\nSNR on the model trained with plain K={train_ks[0]}, {args.snr_batch} test images, "
              f"{args.reps} draws\n")
        print("\n".join(_harness.header(["K", "encoder SNR plain", "STL", "DReG", "decoder SNR plain", "STL",
                                         "DReG"])))
        for k in ks:
            enc = [table[(k, g)][0] for g in ("plain", "stl", "dreg")]
            dec = [table[(k, g)][1] for g in ("plain", "stl", "dreg")]
            print(f"| {k} | " + " | ".join(f"{v:.4f}" for v in enc + dec) + " |")
    print(f"\n| trained with iwae | gradient | s/epoch | test log p(x), K={args.num_samples}, {args.test_size} images "
          f"| − plain, paired | active units |")
    print("|---|---|---|---|---|---|")
    for (k, name), ll in lls.items():
        d = "—" if name == "plain" else f"{diffs[(k, name)][0]:+.2f} ± {diffs[(k, name)][1]:.2f}"
        print(f"| K={k} | {name} | {trained[(k, name)]['seconds_per_epoch']:.1f} | {ll.log_likelihood:.2f} "
              f"± {ll.stderr:.2f} | {d} | {units[(k, name)]} |")
    _harness.write_json(args.json, {
        "machine": machine, "args": vars(args), "train_images": n_train,
        "trained": [{"k": k, "gradient": g, **v} for (k, g), v in trained.items()],
        "snr": [{"k": k, "gradient": g, "encoder": v[0], "decoder": v[1]} for (k, g), v in table.items()],
        "test_ll": [{"k": k, "gradient": g, "log_likelihood": ll.log_likelihood, "stderr": ll.stderr,
                     "minus_plain": diffs[(k, g)], "active_units": units[(k, g)]} for (k, g), ll in lls.items()]})


if __name__ == "__main__":
    main()
