"""Few-shot generation with the Neural Statistician on held-out classes (Edwards & Storkey 2016,
sections 5.3-5.4, here on scikit-learn's 8x8 digits).

``digits-sets`` (pyrovae/data/sets.py): training sets of 5 images of one digit among 0-6
(2,000 sets drawn from the 854 training images of those digits; dynamically binarized), test
sets of 5 images of the held-out digits 7, 8, 9 (every image of those digits, any split, in
disjoint sets: 105 sets), never seen in training. The statistician (Bernoulli p(x | z, c))
is trained on the ELBO; a plain VAE (``vae`` + ``diag``, the same hidden width and z size, no
c) is trained on the same training items, one item per row, for the same epochs: the same
images seen as often. On the held-out sets:

- log p(D) per set, importance-sampled over c and z jointly (K = ``--num-samples``), per item;
  the VAE's sum of log p(x_i) over the same set's items (K alike), per item; and the paired
  difference per set with its standard error. log p(D) >= sum log p(x_i) is what a context
  buys: the set's other items tell the model what the class is.
- the figure docs/figures/statistician-fewshot-digits.png: each row a held-out set (5 images,
  left) and 10 new items generated from it (c = the mean of q(c | D), z ~ p(z | c), the mean of
  p(x | z, c)).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/statistician_fewshot.py      # docs/sets.md
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/statistician_fewshot.py --init torch --vae-objective elbo \
        --figure /tmp/fewshot-torch.png   # the figures measured before burda and meanfield were the defaults

Both models start as ``fit`` starts them (``--init``, default the model's: ``burda`` for binary
items) and the VAE trains on fit's default objective for it (``--vae-objective``, default
``meanfield``, the closed-form KL; the statistician's is the ELBO).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyro
import torch
import _harness  # benchmarks/_harness.py
from matplotlib.figure import Figure

from pyrovae import fit, log_likelihood
from pyrovae.data import DataSet, load_dataset
from pyrovae.evaluation.plots import image_grid, save_figure
from pyrovae.guides import DiagNormalGuide, StatisticianGuide
from pyrovae.infer.importance import mean_and_stderr
from pyrovae.models import VAE, NeuralStatistician
from pyrovae.guides.base import objective_for
from pyrovae.nn.layers import INITS, default_init

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "statistician-fewshot-digits.png"


def fewshot_figure(model, guide, test, path: Path, num_sets: int = 9, num_new: int = 10) -> Path:
    pyro.set_rng_seed(1)
    order = torch.cat([torch.nonzero(test["y"] == k).flatten()[:num_sets // 3] for k in (7, 8, 9)])
    rows = []
    with torch.no_grad():
        for s in order.tolist():
            c = guide.context(test["x"][s:s + 1], test["mask"][s:s + 1]).mean
            new = model.generate(c, num_new)[0]
            gap = torch.ones(1, test["x"].shape[-1])
            rows.append(torch.cat([test["x"][s][test["mask"][s]], gap, new]))
    grid = image_grid(torch.cat(rows), (8, 8), ncol=len(rows[0]))
    fig = Figure(figsize=(7, 0.62 * len(rows) + 0.5))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("held-out digits: 5 given (left), 10 generated from q(c | D)", fontsize=9)
    return save_figure(fig, path)


def main(argv=None) -> dict:
    p = _harness.parser(__doc__.split("\n\n")[0], epochs=30, batch_size=32, lr=1e-3, z_dim=8, num_samples=1000,
                        seed=0, figure=FIGURE, json=None)
    p.add_argument("--c-dim", type=int, default=16)
    p.add_argument("--hidden-dims", type=int, nargs="*", default=[128])
    p.add_argument("--init", choices=INITS, default=None,
                   help="how both models' weights start (default: fit's, the model's: burda for binary items)")
    p.add_argument("--vae-objective", default=None,
                   help="the VAE's objective (default: fit's for vae + diag, meanfield; elbo before it was)")
    args = p.parse_args(argv)

    data = load_dataset("digits-sets")
    hidden = tuple(args.hidden_dims)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = NeuralStatistician(x_dim=64, c_dim=args.c_dim, z_dim=args.z_dim, hidden_dims=hidden,
                               likelihood="bernoulli")
    guide = StatisticianGuide(x_dim=64, c_dim=args.c_dim, z_dim=args.z_dim, hidden_dims=hidden,
                              feature_dim=hidden[-1])
    t0 = time.perf_counter()
    c0 = time.process_time()
    fit(model, guide, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        init=args.init, progress=False)
    seconds_ns, cpu_ns = time.perf_counter() - t0, time.process_time() - c0

    # the VAE on the same items, one per row, dynamically binarized as the sets are
    flat = {name: {"x": getattr(data, name)["x"][getattr(data, name)["mask"]]} for name in ("train", "valid", "test")}
    items = DataSet("digits-items", flat["train"], flat["valid"], flat["test"], (8, 8), data.binarize)
    pyro.set_rng_seed(args.seed)
    vae, vae_guide = VAE(x_dim=64, z_dim=args.z_dim, hidden_dims=hidden), DiagNormalGuide(64, args.z_dim, hidden)
    t0 = time.perf_counter()
    c0 = time.process_time()
    fit(vae, vae_guide, items, objective=args.vae_objective, epochs=args.epochs, batch_size=args.batch_size * 5,
        lr=args.lr, seed=args.seed, init=args.init, progress=False)
    seconds_vae, cpu_vae = time.perf_counter() - t0, time.process_time() - c0
    for m in (model, guide, vae, vae_guide):
        m.eval()

    test = {k: data.test[k] for k in ("x", "mask", "sizes")}
    pyro.set_rng_seed(0)
    ns = log_likelihood(model, guide, test, num_samples=args.num_samples).per_datapoint  # (S,)
    pyro.set_rng_seed(0)
    per_item = log_likelihood(vae, vae_guide, {"x": test["x"].reshape(-1, 64)},
                              num_samples=args.num_samples).per_datapoint.reshape(len(ns), -1)
    vae_sets = per_item.sum(1)
    items_per_set = float(test["sizes"][0])
    ns_mean, ns_se = mean_and_stderr(ns / items_per_set)
    vae_mean, vae_se = mean_and_stderr(vae_sets / items_per_set)
    diff_mean, diff_se = mean_and_stderr((ns - vae_sets) / items_per_set)
    figure = fewshot_figure(model, guide, data.test, args.figure)
    out = {
        "budget": {"epochs": args.epochs, "train_sets": len(data.train["x"]), "set_size": 5,
                   "batch_size_sets": args.batch_size, "lr": args.lr, "threads": torch.get_num_threads(),
                   "init": args.init or default_init(model), "vae_init": args.init or default_init(vae),
                   "vae_objective": args.vae_objective or objective_for(vae, vae_guide), "seed": args.seed,
                   "fit_seconds_statistician": round(seconds_ns, 1), "fit_seconds_vae": round(seconds_vae, 1),
                   "fit_cpu_seconds_statistician": round(cpu_ns, 1), "fit_cpu_seconds_vae": round(cpu_vae, 1)},
        "sizes": {"c_dim": args.c_dim, "z_dim": args.z_dim, "hidden_dims": list(hidden)},
        "test_sets": len(ns), "held_out_digits": [7, 8, 9], "K": args.num_samples,
        "per_item_log_p_D_statistician": [ns_mean, ns_se],
        "per_item_log_p_x_vae": [vae_mean, vae_se],
        "paired_difference_per_item": [diff_mean, diff_se],
        "per_set_log_p_D_statistician": [round(float(v), 4) for v in ns],
        "per_set_sum_log_p_x_vae": [round(float(v), 4) for v in vae_sets],
        "figure": str(figure),
    }
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("per_set")}, indent=1))
    _harness.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
