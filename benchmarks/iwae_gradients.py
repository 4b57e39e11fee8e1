"""The encoder gradient's signal-to-noise ratio against K for the plain, STL and DReG
estimators of the IWAE gradient (Rainforth et al. 2018; Tucker et al. 2018), and the test
log-likelihood after equal training at K = 5 with the plain and the DReG gradient.

1. Train a VAE (784-200-200-50, tanh, Bernoulli; diagonal Normal guide) on dynamically
   binarized MNIST with ``iwae`` (K = 5, plain gradient) for ``--epochs`` epochs; train a copy
   of the same initial weights with ``gradient="dreg"`` on the same batches.
2. On the plain-trained model, for K in ``--ks`` and each estimator: ``--reps`` independent
   gradient draws on one fixed batch of ``--snr-batch`` test images; per parameter
   ``SNR = |mean| / std`` over the draws, averaged over the guide's (encoder) parameters, and
   over the model's (decoder) for comparison (parameters whose gradient is zero on every draw,
   e.g. weights of always-black pixels, are left out).
3. The test log-likelihood of both trained pairs by importance sampling (``--num-samples``),
   on the same ``--test-size`` test images, with standard errors and the paired difference.

    OMP_NUM_THREADS=1 python benchmarks/iwae_gradients.py --data-dir $PYROVAE_DATA

Prints a markdown table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import tempfile
import time

import pyro
import torch

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.infer.objectives import IWAE
from pyrovae.models import VAE


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--ks", default="1,5,50,500")
    p.add_argument("--reps", type=int, default=200, help="gradient draws per (K, estimator) for the SNR")
    p.add_argument("--snr-batch", type=int, default=8, help="test images in the SNR's fixed batch")
    p.add_argument("--num-samples", type=int, default=1000, help="K for the test log-likelihood")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    torch.manual_seed(args.seed)
    hidden = (200, 200)
    model, guide = VAE(784, args.z_dim, hidden), DiagNormalGuide(784, args.z_dim, hidden)
    dreg_model, dreg_guide = copy.deepcopy(model), copy.deepcopy(guide)
    trained = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (m, g) in (("plain", (model, guide)), ("dreg", (dreg_model, dreg_guide))):
            pyro.clear_param_store()
            t0 = time.perf_counter()
            result = pyrovae.fit(m, g, dataset, objective=IWAE(num_particles=5, gradient=name), epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False,
                                 out_dir=f"{tmp}/{name}")
            seconds = time.perf_counter() - t0
            trained[name] = {"seconds": seconds, "final_train_loss": result.metrics[-1]["train_loss"],
                             "seconds_per_epoch": sum(r["seconds"] for r in result.metrics) / len(result.metrics)}
            print(f"trained {name}: {seconds:.0f} s, final train loss {trained[name]['final_train_loss']:.2f}",
                  flush=True)

    batch = {"x": dataset.test["x"][: args.snr_batch]}
    ks = [int(k) for k in args.ks.split(",")]
    table = {}
    for k in ks:
        for gradient in ("plain", "stl", "dreg"):
            t0 = time.perf_counter()
            table[(k, gradient)] = snr(model, guide, batch, k, gradient, args.reps, args.seed + k)
            print(f"K={k} {gradient}: encoder SNR {table[(k, gradient)][0]:.4f}, decoder SNR "
                  f"{table[(k, gradient)][1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    test = {"x": dataset.test["x"][: args.test_size]}
    lls = {}
    for name, (m, g) in (("plain", (model, guide)), ("dreg", (dreg_model, dreg_guide))):
        pyro.set_rng_seed(args.seed)
        lls[name] = pyrovae.log_likelihood(m, g, test, num_samples=args.num_samples)
    diff = (lls["dreg"].per_datapoint - lls["plain"].per_datapoint).double()
    diff_mean, diff_se = float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))

    machine = f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), CPU"
    print(f"\n{machine}; VAE 784-200-200-{args.z_dim}, {args.epochs} epochs of iwae K=5, SNR on {args.snr_batch} "
          f"test images, {args.reps} draws\n")
    print("| K | encoder SNR plain | STL | DReG | decoder SNR plain | STL | DReG |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        enc = [table[(k, g)][0] for g in ("plain", "stl", "dreg")]
        dec = [table[(k, g)][1] for g in ("plain", "stl", "dreg")]
        print(f"| {k} | " + " | ".join(f"{v:.4f}" for v in enc + dec) + " |")
    print(f"\n| trained with iwae K=5 | s/epoch | test log p(x), K={args.num_samples}, {args.test_size} images |")
    print("|---|---|---|")
    for name in ("plain", "dreg"):
        print(f"| {name} | {trained[name]['seconds_per_epoch']:.1f} | {lls[name].log_likelihood:.2f} "
              f"± {lls[name].stderr:.2f} |")
    print(f"\nDReG - plain, paired on the same images: {diff_mean:+.3f} ± {diff_se:.3f} nats")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "trained": trained,
                       "snr": [{"k": k, "gradient": g, "encoder": v[0], "decoder": v[1]} for (k, g), v in table.items()],
                       "test_ll": {n: [ll.log_likelihood, ll.stderr] for n, ll in lls.items()},
                       "dreg_minus_plain": [diff_mean, diff_se]}, f, indent=1)


if __name__ == "__main__":
    main()
