"""A KL warm-up's steps, replayed against eager, interleaved in one process.

Every step of these fits is inside a KL warm-up (``ELBO(warmup_steps=10**6)``): fit's CPU replay
(:mod:`pyrovae.training.replay`) records the step with the KL weight as an input and replays it
at each step's own weight; ``replay=False`` runs each step eagerly. The pair is ``pyrovae
bench``'s VAE (784-200-200-50 tanh, Bernoulli, the diagonal guide), statically binarized MNIST,
batch 100, fit's Adam; rounds alternate eager and replayed fits, each the fastest of its
epochs after the first (fit's ``seconds`` are process CPU time), so background load hits both
alike. Printed: ms per step of each and the eager / replayed ratio per round, and their medians.

    OMP_NUM_THREADS=1 python benchmarks/warmup_replay.py --rounds 3    # docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import statistics

import pyro
import torch

from pyrovae import fit
from pyrovae.bench.runners import make_pair
from pyrovae.data.datasets import load_dataset
from pyrovae.infer.objectives import ELBO


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="per fit; the first is not timed")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch, with the recording, is not timed)")
    torch.set_num_threads(args.threads)
    x = load_dataset("mnist", binarize="static").train["x"][:args.train_size]
    steps = -(-len(x) // args.batch_size)
    ms = {"eager": [], "replayed": []}
    for round_ in range(args.rounds):
        for replay in (False, True):
            pyro.clear_param_store()
            model, guide, _ = make_pair("diag", "cpu", seed=round_)
            result = fit(model, guide, {"x": x}, objective=ELBO(warmup_steps=10**6), epochs=args.epochs,
                         batch_size=args.batch_size, seed=round_, progress=False, figures=False, replay=replay,
                         valid_every=0)
            ms["replayed" if replay else "eager"].append(
                1000 * min(row["seconds"] for row in result.metrics[1:]) / steps)
    ratios = [e / r for e, r in zip(ms["eager"], ms["replayed"])]
    for name, values in ms.items():
        print(f"{name:>8}: " + " ".join(f"{v:.2f}" for v in values) + f" ms per step (median {statistics.median(values):.2f})")
    print("eager / replayed: " + " ".join(f"{r:.3f}" for r in ratios) + f" (median {statistics.median(ratios):.3f}); "
          f"{args.threads} thread(s), {len(x)} images, batch {args.batch_size}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ms_per_step": ms, "ratio": ratios, "threads": args.threads, "train_size": len(x),
                       "batch_size": args.batch_size}, f, indent=1)


if __name__ == "__main__":
    main()
