"""M2 on MNIST with 3000 labels: one training setting changed at a time (the ablation of
docs/semi-supervised.md that found why ``pyrovae fit --model m2`` trailed Pyro's own
``examples/vae/ss_vae_M2.py`` at equal budget).

It trains the suite's M2 pair (models/m2.py, guides/m2.py) with the ``enum`` objective
(pyrovae/infer/enum.py) in a small loop of its own, so that each of these can be set apart:

- ``--alpha``: the classifier term's weight per labelled row (default: the data set's
  ``paper_alpha``, Kingma et al.'s 0.1 N);
- ``--lr``, ``--beta1``: Adam's;
- ``--batch-size``;
- ``--repeats``: times each labelled row is in an epoch's stream;
- ``--stream``: ``mixed`` (the suite's: the labelled rows shuffled in among the unlabelled,
  every batch a mix) or ``separate`` (Pyro's example: batches wholly labelled or wholly
  unlabelled, one labelled batch every ``N / N_l`` batches);
- ``--grey``: the Bernoulli likelihood on grey levels in [0, 1] (as Pyro's example) instead of
  dynamically binarized pixels (test images then grey too);
- ``--init``: ``torch``, ``glorot`` or ``burda`` (pyrovae/nn.py's ``initialize_``), or
  ``small-hidden`` (the hidden layers' weights and biases drawn from N(0, 0.001^2), the output
  layers torch's: how Pyro's example starts its networks).

The model, guide and objective are the suite's; only the loop is this script's. Per epoch it
prints the test error of q(y | x) on the 10,000 test images, the validation error on the 10,000
validation images, and the seconds the epoch took. ``--json`` writes the rows.

    OMP_NUM_THREADS=1 python benchmarks/m2_ablation.py --epochs 10                      # the suite's defaults
    OMP_NUM_THREADS=1 python benchmarks/m2_ablation.py --epochs 10 --alpha 46 --repeats 1 --stream separate
"""

from __future__ import annotations

import argparse
import json
import math
import time

import pyro
import torch

from pyrovae.data.datasets import load_dataset
from pyrovae.data.semisupervised import semi_supervised
from pyrovae.guides.m2 import M2Guide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.m2 import M2
from pyrovae.nn import initialize_


def epoch_batches(data, batch_size: int, stream: str, g: torch.Generator):
    """The row indices of each batch of one epoch of ``data.train``."""
    n = len(data.train["labelled"])
    if stream == "mixed":
        order = torch.randperm(n, generator=g)
        return list(order.split(batch_size))
    labelled = data.train["labelled"].nonzero().squeeze(-1)
    unlabelled = (~data.train["labelled"]).nonzero().squeeze(-1)
    sup = list(labelled[torch.randperm(len(labelled), generator=g)].split(batch_size))
    unsup = list(unlabelled[torch.randperm(len(unlabelled), generator=g)].split(batch_size))
    every = int((data.num_unlabelled + data.num_labels) / data.num_labels)
    out = []
    for i in range(len(sup) + len(unsup)):
        if i % every == 1 and sup:
            out.append(sup.pop(0))
        else:
            out.append(unsup.pop(0) if unsup else sup.pop(0))
    return out


@torch.no_grad()
def error(guide, split) -> float:
    return 100.0 * float((guide.classify(split["x"]).argmax(-1) != split["y"]).float().mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--alpha", type=float, default=None, help="per labelled row (default: paper_alpha)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=None, help="labelled repeats per epoch (default: the data set's)")
    p.add_argument("--stream", choices=("mixed", "separate"), default="mixed")
    p.add_argument("--grey", action="store_true", help="Bernoulli likelihood on grey levels (no binarization)")
    p.add_argument("--init", default="torch")
    p.add_argument("--label", default="", help="a name for this row")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)

    mnist = load_dataset("mnist", binarize="none" if args.grey else None)
    data = semi_supervised(mnist, args.labels, seed=args.seed, repeats=args.repeats)
    alpha = data.paper_alpha if args.alpha is None else args.alpha
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sizes = dict(data.dims(), z_dim=50, hidden_dims=(500,), activation="softplus")
    model, guide = M2(**sizes), M2Guide(**sizes)
    if args.init == "small-hidden":
        with torch.no_grad():
            for net in (model.decoder, guide.classifier, guide.encoder):
                for layer in list(net)[:-1]:
                    if isinstance(layer, torch.nn.Linear):
                        layer.weight.normal_(0, 1e-3), layer.bias.normal_(0, 1e-3)
    else:
        initialize_(model, guide, {k: v[:10000] for k, v in data.train.items()}, args.init)
    objective = EnumELBO(alpha=alpha)
    params = list(model.parameters()) + list(guide.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr, betas=(args.beta1, 0.999))
    g = torch.Generator().manual_seed(args.seed)
    valid = {"x": data.valid["x"], "y": data.valid["y"]}
    rows = []
    print(f"{args.label}: alpha {alpha:.3f}, repeats {data.repeats}, stream {args.stream}, batch {args.batch_size}, "
          f"lr {args.lr}, beta1 {args.beta1}, grey {args.grey}, init {args.init}; {len(data.train['x'])} rows",
          flush=True)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        total, steps = 0.0, 0
        for index in epoch_batches(data, args.batch_size, args.stream, g):
            batch = data.transform({k: v[index] for k, v in data.train.items()}, generator=g)
            loss = objective.loss(model, guide, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        seconds = time.perf_counter() - t0
        row = {"label": args.label, "epoch": epoch, "steps": steps, "loss": total / steps, "seconds": seconds,
               "test_error": error(guide, data.test), "valid_error": error(guide, valid)}
        assert math.isfinite(row["loss"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = min(rows, key=lambda r: r["valid_error"])
    summary = {"label": args.label, "args": vars(args), "alpha": alpha, "repeats": data.repeats,
               "final_test_error": rows[-1]["test_error"], "best_valid_epoch": best["epoch"],
               "test_error_at_best_valid": best["test_error"],
               "seconds_per_epoch": sum(r["seconds"] for r in rows) / len(rows), "epochs": rows}
    print(f"SUMMARY {args.label}: final test error {rows[-1]['test_error']:.2f}%, at best valid epoch "
          f"{best['epoch']}: {best['test_error']:.2f}%, {summary['seconds_per_epoch']:.1f} s/epoch", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
