"""VRNN against the deep Markov model on the Bach chorales (``bach-chorales``), paired.

Both are trained with the same budget (epochs, batch, lr, seed) and evaluated by importance
sampling with the same K on the same test chorales; the figure is log p(x) per beat (the sum
over a split's chorales divided by its number of real steps), and the paired difference is
taken per chorale (nats per chorale -> per beat by the mean length). The latent-free RNN of
issue 13 item 4 is not in this script yet.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/sequences_chorales.py --epochs 5
"""

import argparse
import math
import time

import pyro
import torch

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.guides.dmm import DMMGuide
from pyrovae.guides.vrnn import VRNNGuide
from pyrovae.models.dmm import DMM
from pyrovae.models.vrnn import VRNN

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--z-dim", type=int, default=16)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--num-samples", type=int, default=100)
parser.add_argument("--seed", type=int, default=0)


def main():
    args = parser.parse_args()
    data = load_dataset("bach-chorales")
    h, z = args.hidden, args.z_dim
    pairs = {
        "VRNN": lambda: (VRNN(x_dim=88, z_dim=z, rnn_dim=h, feature_dim=h, hidden_dims=(h,)),
                         VRNNGuide(x_dim=88, z_dim=z, rnn_dim=h, feature_dim=h, hidden_dims=(h,))),
        "DMM": lambda: (DMM(x_dim=88, z_dim=z, transition_dim=h, emission_dim=h),
                        DMMGuide(x_dim=88, z_dim=z, rnn_dim=h)),
    }
    test = data.test
    beats = float(test["lengths"].sum())
    n = len(test["lengths"])
    per = {}
    print(f"threads {torch.get_num_threads()}, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, "
          f"z {z}, hidden {h}, K={args.num_samples}; test: {n} chorales, {beats:.0f} beats")
    for name, make in pairs.items():
        pyro.set_rng_seed(args.seed)
        model, guide = make()
        t0 = time.perf_counter()
        fit(model, guide, data.bucketed("train", batch_size=args.batch_size, seed=args.seed), epochs=args.epochs,
            lr=args.lr, seed=args.seed, progress=False)
        seconds = (time.perf_counter() - t0) / args.epochs
        model.eval(), guide.eval()
        pyro.set_rng_seed(args.seed)
        est = log_likelihood(model, guide, test, num_samples=args.num_samples)
        per[name] = est.per_datapoint.double()
        print(f"{name:5s} {seconds:6.2f} s/epoch   test log p / beat {est.log_likelihood * n / beats:8.3f} "
              f"± {est.stderr * n / beats:.3f}   ELBO / beat {est.elbo * n / beats:8.3f}")
    d = per["DMM"] - per["VRNN"]
    print(f"DMM - VRNN, paired over {n} test chorales: {float(d.sum()) / beats:+.3f} "
          f"± {float(d.std() / math.sqrt(n)) * n / beats:.3f} nats / beat")


if __name__ == "__main__":
    main()
