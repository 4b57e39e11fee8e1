"""The Neural Statistician's first experiment (Edwards & Storkey 2016, section 5.1): sets of 1-D
samples from four families, and a context c that tells them apart.

Each set holds ``--set-size`` samples (the paper's 200) of a Gaussian, uniform, exponential or
Laplace distribution, mean ~ U[-1, 1] and variance ~ U[0.5, 2] (:func:`pyrovae.data.sets.
distribution_sets`; train, valid, test seeds 0, 1, 2). The model is ``statistician`` with a 3-D
c (as the paper's; ``--c-dim 2`` plots c itself, a larger one is projected on its first two
principal components), tanh units and a Gaussian p(x | z, c), the guide ``statistician``,
trained on the ELBO (Adam, ``--lr``, batches of ``--batch-size`` sets). Then, on the held-out
test sets:

- the posterior mean of c per set, plotted coloured by family
  (docs/figures/statistician-synthetic-contexts.png);
- the family classified from that mean by a nearest-centroid rule (the four centroids of the
  training sets' means) and by a multinomial logistic regression (scikit-learn, fitted on the
  training sets' means): the accuracy on the test sets;
- log p(D) per set, importance-sampled over c and z jointly (K = ``--num-samples``), with its
  standard error, also per item;
- the ELBO of every test set (the mean of ``--elbo-draws`` single-draw bounds), per item, with
  its standard error (the figure a reference implementation's own bound compares with);
- new samples given a test set (c's posterior mean, then z ~ p(z | c), x ~ p(x | z, c)) beside
  the set itself (docs/figures/statistician-synthetic-samples.png).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/statistician_synthetic.py           # docs/sets.md (60 epochs)
    OMP_NUM_THREADS=1 python benchmarks/statistician_synthetic.py --train-sets 200 --epochs 1 --num-samples 50
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
from pyrovae.data.sets import FAMILIES, load_synthetic_sets
from pyrovae.evaluation.plots import save_figure
from pyrovae.infer.objectives import ELBO
from pyrovae.guides.statistician import StatisticianGuide
from pyrovae.models.statistician import NeuralStatistician

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


@torch.no_grad()
def context_means(guide, split, batch: int = 500) -> torch.Tensor:
    """The mean of q(c | D) for every set of ``split``, ``(S, c_dim)``."""
    return torch.cat([guide.context(split["x"][i:i + batch], split["mask"][i:i + batch]).mean
                      for i in range(0, len(split["x"]), batch)])


@torch.no_grad()
def set_elbos(model, guide, split, draws: int, batch: int = 250) -> torch.Tensor:
    """The ELBO of every set of ``split`` (nats per set), the mean of ``draws`` single-draw
    bounds (one importance sample each: its log-weight)."""
    total = torch.zeros(len(split["x"]))
    for d in range(draws):
        pyro.set_rng_seed(100 + d)
        for i in range(0, len(split["x"]), batch):
            part = {k: split[k][i:i + batch] for k in ("x", "mask", "sizes")}
            total[i:i + batch] += log_likelihood(model, guide, part, num_samples=1).per_datapoint / draws
    return total


def classify(train_c, train_y, test_c, test_y) -> dict:
    """Accuracy of the family from c: nearest centroid, and logistic regression."""
    from sklearn.linear_model import LogisticRegression

    centroids = torch.stack([train_c[train_y == k].mean(0) for k in range(len(FAMILIES))])
    nearest = torch.cdist(test_c, centroids).argmin(1)
    logistic = LogisticRegression(max_iter=2000).fit(train_c.numpy(), train_y.numpy())
    confusion = np.zeros((len(FAMILIES), len(FAMILIES)), dtype=int)
    for t, p in zip(test_y.tolist(), logistic.predict(test_c.numpy()).tolist()):
        confusion[t, p] += 1
    return {"nearest_centroid": float((nearest == test_y).float().mean()),
            "logistic_regression": float(logistic.score(test_c.numpy(), test_y.numpy())),
            "confusion_logistic": confusion.tolist()}


def contexts_figure(test_c, test_y, path: Path) -> Path:
    """The test sets' posterior means of c coloured by family: c itself when 2-D, else its
    projection on its first two principal components."""
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    shown, axis = test_c, "c[{}] (posterior mean)"
    if test_c.shape[1] > 2:
        centred = test_c - test_c.mean(0)
        shown = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
        axis = "principal component {} of the mean of q(c | D)"
    for k, name in enumerate(FAMILIES):
        chosen = shown[test_y == k]
        ax.scatter(chosen[:, 0], chosen[:, 1], s=6, alpha=0.6, c=COLOURS[k], label=name)
    ax.set_xlabel(axis.format(0))
    ax.set_ylabel(axis.format(1))
    ax.set_title(f"held-out sets: mean of q(c | D), by family ({test_c.shape[1]}-D c)")
    ax.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def samples_figure(model, guide, test, path: Path, num_items: int = 2000) -> Path:
    """One test set of each family: its samples and samples generated from its context."""
    fig = Figure(figsize=(10, 2.6))
    axes = fig.subplots(1, len(FAMILIES))
    pyro.set_rng_seed(1)
    for k, ax in enumerate(axes):
        s = int(torch.nonzero(test["y"] == k)[0])
        x = test["x"][s, test["mask"][s], 0]
        with torch.no_grad():
            c = guide.context(test["x"][s:s + 1], test["mask"][s:s + 1]).mean
            new = model.generate(c, num_items, mean=False)[0, :, 0]
        bins = np.linspace(float(x.min()) - 1, float(x.max()) + 1, 40)
        ax.hist(x.numpy(), bins=bins, density=True, alpha=0.5, label=f"the set ({len(x)})")
        ax.hist(new.numpy(), bins=bins, density=True, histtype="step", lw=1.5, label="generated from c")
        ax.set_title(f"{FAMILIES[k]} (mean {float(test['mean'][s]):.2f}, var {float(test['var'][s]):.2f})",
                     fontsize=8)
        ax.set_yticks([])
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv=None) -> dict:
    p = _harness.parser(__doc__.split("\n\n")[0], epochs=60, batch_size=16, lr=3e-3, z_dim=4, num_samples=1000,
                        seed=0, json=None)
    p.add_argument("--train-sets", type=int, default=2000)
    p.add_argument("--test-sets", type=int, default=1000)
    p.add_argument("--set-size", type=int, default=200)
    p.add_argument("--c-dim", type=int, default=3)
    p.add_argument("--hidden-dims", type=int, nargs="*", default=[64, 64])
    p.add_argument("--activation", default="tanh")
    p.add_argument("--kl-warmup", type=int, default=0, help="linear KL warm-up over this many steps (0: none)")
    p.add_argument("--init", default=None, help="fit's init (default: the model's)")
    p.add_argument("--elbo-draws", type=int, default=5, help="draws of the ELBO of every test set")
    p.add_argument("--num-ll-sets", type=int, default=100, help="test sets whose log p(D) is estimated")
    p.add_argument("--figures", type=Path, default=FIGURES)
    args = p.parse_args(argv)

    data = load_synthetic_sets(args.train_sets, 200, args.test_sets, args.set_size)
    sizes = dict(x_dim=1, c_dim=args.c_dim, z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims),
                 activation=args.activation)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = NeuralStatistician(**sizes, likelihood="gaussian")
    guide = StatisticianGuide(**sizes, feature_dim=args.hidden_dims[-1] if args.hidden_dims else 64)
    t0, c0 = time.perf_counter(), time.process_time()
    objective = ELBO(warmup_steps=args.kl_warmup) if args.kl_warmup else None
    result = fit(model, guide, data, objective=objective, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                 seed=args.seed, progress=False, init=args.init)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval(), guide.eval()

    train_c, test_c = context_means(guide, data.train), context_means(guide, data.test)
    accuracy = classify(train_c, data.train["y"], test_c, data.test["y"])
    pyro.set_rng_seed(0)
    subset = {k: v[:args.num_ll_sets] for k, v in data.test.items() if k in ("x", "mask", "sizes")}
    est = log_likelihood(model, guide, subset, num_samples=args.num_samples)
    items = float(subset["sizes"].sum())
    test_elbo = set_elbos(model, guide, data.test, args.elbo_draws)
    figures = [contexts_figure(test_c, data.test["y"], args.figures / "statistician-synthetic-contexts.png"),
               samples_figure(model, guide, data.test, args.figures / "statistician-synthetic-samples.png")]
    out = {
        "budget": {"train_sets": args.train_sets, "set_size": args.set_size, "epochs": args.epochs,
                   "batch_size": args.batch_size, "lr": args.lr, "threads": torch.get_num_threads(),
                   "kl_warmup": args.kl_warmup, "init": args.init,
                   "fit_seconds": round(seconds, 1), "fit_cpu_seconds": round(cpu, 1),
                   "cpu_seconds_per_epoch": round(cpu / args.epochs, 2)},
        "sizes": sizes,
        "final_train_loss_per_set": result.metrics[-1]["train_loss"],
        "valid_elbo_per_set": result.metrics[-1].get("valid_elbo"),
        "accuracy": accuracy,
        "test_log_p_D": {"K": args.num_samples, "sets": len(subset["x"]), "per_set": est.log_likelihood,
                         "stderr": est.stderr, "per_item": est.log_likelihood * len(subset["x"]) / items,
                         "elbo_per_set": est.elbo},
        "test_elbo_per_item": {"sets": len(test_elbo), "draws": args.elbo_draws,
                               "mean": float(test_elbo.mean()) / args.set_size,
                               "stderr": float(test_elbo.std() / len(test_elbo) ** 0.5) / args.set_size},
        "per_set_elbo": [round(float(e) / args.set_size, 5) for e in test_elbo],
        "figures": [str(f) for f in figures],
    }
    print(json.dumps({k: v for k, v in out.items() if k != "per_set_elbo"}, indent=1))
    _harness.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
