"""The Variational Homoencoder against the Neural Statistician on held-out digit classes, at equal
budget, paired on the same sets (Hewitt et al. 2018; Edwards & Storkey 2016).

``digits-sets`` (pyrovae/data/sets.py): training sets of 5 images of one digit among 0-6 (2,000
sets drawn from the 854 training images of those digits, dynamically binarized), test sets the
105 disjoint sets of 5 images of the held-out digits 7, 8, 9. Three pairs, the same networks
(c 16-D, z 8-D, hidden (128,), Bernoulli p(x | z, c)), the same epochs, batches and seed:

- ``statistician``: q(c | X) over the whole training set of 5 it decodes (eq. 3 of Edwards & Storkey);
- ``homoencoder, |X| = 5``: q(c | D), D a random 1-5 of the 5, all 5 decoded, KL of c weight 1;
- ``homoencoder, |X| = class``: the same, with each training set taken as 5 elements of its whole
  class X (the 114-131 training images of its digit), so the KL of c is weighted 5 / |X|
  (Hewitt et al.'s bound, eq. 4, with X the class as in their Omniglot experiments).

On the held-out sets: log p(D) per set, importance-sampled over c and z jointly (K =
``--num-samples``) with each pair's guide reading the whole test set, divided by 5 (per
element); paired differences with the statistician per set (mean +- standard error). The same
on the disjoint held-out sets of ``--large-set-size`` images (20: the size of Hewitt et al.'s
test classes, where the cost of c is shared by 20 elements). ``--subclasses k`` splits each
training digit's images into k classes by k-means (more, smaller training classes: 62 of 5-26
images for k = 10), the homoencoder's |X| each set's cluster; the test sets stay. And the
one-shot figure docs/figures/vhe-oneshot-digits.png: each row one held-out image, then items
generated from c = the mean of q(c | {that image}) by the homoencoder (|X| = class) and by the
statistician (z ~ p(z | c), the mean of p(x | z, c)).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/vhe_sets.py      # docs/sets.md
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/vhe_sets.py --subclasses 10 --figure /tmp/vhe-sub10.png
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/vhe_sets.py --init torch --figure /tmp/vhe-torch.png  # its "before"

Every pair starts as ``fit`` starts it (``--init``, default the model's: ``burda`` for binary
items); ``--init torch`` gives torch's layers, the default before Burda et al.'s start.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pyro
import torch
import _harness  # benchmarks/_harness.py
from matplotlib.figure import Figure

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.data.sets import TRAIN_DIGITS, class_sets, sets_by_class
from pyrovae.evaluation.plots import image_grid, save_figure
from pyrovae.guides import HomoencoderGuide, StatisticianGuide
from pyrovae.infer.importance import mean_and_stderr
from pyrovae.models import NeuralStatistician, VariationalHomoencoder
from pyrovae.nn.layers import INITS, default_init

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "vhe-oneshot-digits.png"


def with_class_size(data):
    """digits-sets with each training set's ``class_size``: the training images of its digit."""
    counts = torch.bincount(load_dataset("digits").train["y"], minlength=10)
    train = {**data.train, "class_size": counts[data.train["y"]]}
    valid = {**data.valid, "class_size": counts[data.valid["y"]]}
    test = {**data.test, "class_size": data.test["sizes"]}
    return dataclasses.replace(data, train=train, valid=valid, test=test), counts


def with_subclasses(data, k: int, seed: int = 0):
    """digits-sets with each training digit's images split into ``k`` classes by k-means
    (scikit-learn, on the grey images; clusters of fewer than 5 images dropped): 2,000 training
    sets of 5 drawn from those classes in turn, each with its ``class_size``, the cluster's size.
    More, smaller training classes; the same test sets."""
    from sklearn.cluster import KMeans

    digits = load_dataset("digits")
    x, y = digits.train["x"], digits.train["y"]
    fine = torch.full_like(y, -1)
    for d in TRAIN_DIGITS:
        rows = torch.nonzero(y == d).flatten()
        labels = KMeans(k, n_init=4, random_state=seed).fit_predict(x[rows].numpy())
        fine[rows] = d * k + torch.as_tensor(labels, dtype=y.dtype)
    counts = torch.bincount(fine[fine >= 0], minlength=10 * k)
    classes = [c for c in range(10 * k) if counts[c] >= 5]
    train = sets_by_class(x, fine, 5, classes=classes, num_sets=len(data.train["x"]), seed=0)
    train = {**train, "class_size": counts[train["y"]]}
    return dataclasses.replace(data, train=train), counts[classes]


def oneshot_figure(pairs, test, path: Path, num_rows: int = 6, num_new: int = 8) -> Path:
    pyro.set_rng_seed(1)
    chosen = torch.cat([torch.nonzero(test["y"] == k).flatten()[:num_rows // 3] for k in (7, 8, 9)])
    rows, gap = [], torch.ones(1, test["x"].shape[-1])
    with torch.no_grad():
        for s in chosen.tolist():
            one = test["x"][s, :1][None]  # a set of one held-out image
            row = [one[0], gap]
            for model, guide in pairs:
                c = guide.context(one, torch.ones(1, 1, dtype=torch.bool)).mean
                row += [model.generate(c, num_new)[0], gap]
            rows.append(torch.cat(row[:-1]))
    grid = image_grid(torch.cat(rows), (8, 8), ncol=len(rows[0]))
    fig = Figure(figsize=(8, 0.6 * len(rows) + 0.6))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"one held-out image (left); {num_new} generated by the homoencoder, then {num_new} by the "
                 "statistician", fontsize=8)
    return save_figure(fig, path)


def main(argv=None) -> dict:
    p = _harness.parser(__doc__.split("\n\n")[0], epochs=30, batch_size=32, lr=1e-3, z_dim=8, num_samples=1000,
                        seed=0, figure=FIGURE, json=None)
    p.add_argument("--c-dim", type=int, default=16)
    p.add_argument("--hidden-dims", type=int, nargs="*", default=[128])
    p.add_argument("--large-set-size", type=int, default=20,
                   help="also score disjoint held-out sets of this many images (|X| as in Hewitt et al.'s test classes)")
    p.add_argument("--subclasses", type=int, default=1,
                   help="split each training digit into this many classes by k-means (1: the digits themselves)")
    p.add_argument("--init", choices=INITS, default=None,
                   help="how every pair's weights start (default: fit's, the model's: burda for binary items)")
    p.add_argument("--decoder", choices=("mlp", "pixelcnn"), default="mlp",
                   help="p(x | z, c) of every pair: an MLP, or a gated PixelCNN over the 8x8 pixels (the paper's)")
    p.add_argument("--num-layers", type=int, default=3, help="the PixelCNN's layers")
    p.add_argument("--pixel-channels", type=int, default=16, help="the PixelCNN's channels")
    args = p.parse_args(argv)

    data, counts = with_class_size(load_dataset("digits-sets"))
    if args.subclasses > 1:
        data, counts = with_subclasses(data, args.subclasses)
    hidden = tuple(args.hidden_dims)
    sizes = dict(x_dim=64, c_dim=args.c_dim, z_dim=args.z_dim, hidden_dims=hidden)
    decoder = ({} if args.decoder == "mlp" else
               {"decoder": "pixelcnn", "num_layers": args.num_layers, "pixel_channels": args.pixel_channels})
    runs = {
        "statistician": (NeuralStatistician, StatisticianGuide, decoder, {"x", "mask", "sizes"}),
        "homoencoder |X|=5": (VariationalHomoencoder, HomoencoderGuide, decoder, {"x", "mask", "sizes"}),
        "homoencoder |X|=class": (VariationalHomoencoder, HomoencoderGuide, decoder,
                                  {"x", "mask", "sizes", "class_size"}),
    }
    test = {k: data.test[k] for k in ("x", "mask", "sizes")}
    large = {k: v for k, v in class_sets(load_dataset("digits"), args.large_set_size).test.items()
             if k in ("x", "mask", "sizes")}
    items = float(test["sizes"][0])
    pairs, per_set, per_large, seconds, cpu, c_kl = {}, {}, {}, {}, {}, {}
    for name, (model_cls, guide_cls, extra, keys) in runs.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = model_cls(**sizes, likelihood="bernoulli", **extra)
        guide = guide_cls(**sizes, feature_dim=hidden[-1])
        train = dataclasses.replace(data, train={k: v for k, v in data.train.items() if k in keys | {"y"}},
                                    valid={k: v for k, v in data.valid.items() if k in keys | {"y"}})
        t0, c0 = time.perf_counter(), time.process_time()
        fit(model, guide, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            init=args.init, progress=False)
        seconds[name] = round(time.perf_counter() - t0, 1)
        cpu[name] = round(time.process_time() - c0, 1)
        model.eval(), guide.eval()
        pyro.set_rng_seed(0)
        per_set[name] = log_likelihood(model, guide, test, num_samples=args.num_samples).per_datapoint
        pyro.set_rng_seed(0)
        per_large[name] = log_likelihood(model, guide, large, num_samples=args.num_samples).per_datapoint
        pairs[name] = (model, guide)
        with torch.no_grad():  # how much the held-out sets' contexts say: KL(q(c | D) || p(c)) per set
            c_kl[name] = mean_and_stderr(torch.distributions.kl_divergence(
                guide.context(test["x"], test["mask"]), model.prior_c(test["x"])))
        print(name, seconds[name], "s", mean_and_stderr(per_set[name] / items),
              mean_and_stderr(per_large[name] / args.large_set_size), "KL of c", c_kl[name], flush=True)

    base = per_set["statistician"]
    out = {
        "budget": {"epochs": args.epochs, "train_sets": len(data.train["x"]), "set_size": 5,
                   "batch_size_sets": args.batch_size, "lr": args.lr, "threads": torch.get_num_threads(),
                   "init": args.init or default_init(model), "seed": args.seed,
                   "fit_seconds": seconds, "fit_cpu_seconds": cpu},
        "sizes": {"c_dim": args.c_dim, "z_dim": args.z_dim, "hidden_dims": list(hidden), "decoder": args.decoder}
        | ({} if args.decoder == "mlp" else {"pixelcnn_layers": args.num_layers, "pixel_channels": args.pixel_channels}),
        "kl_of_c_per_test_set": c_kl,
        "subclasses": args.subclasses,
        "class_sizes": ({int(k): int(counts[k]) for k in TRAIN_DIGITS} if args.subclasses == 1
                        else {"classes": len(counts), "min": int(counts.min()), "max": int(counts.max())}),
        "test_sets": len(base), "held_out_digits": [7, 8, 9], "K": args.num_samples,
        "per_element_log_p_D": {name: mean_and_stderr(v / items) for name, v in per_set.items()},
        "paired_difference_with_statistician_per_element": {
            name: mean_and_stderr((v - base) / items) for name, v in per_set.items() if name != "statistician"},
        "large_sets": {"set_size": args.large_set_size, "sets": len(large["x"]),
                       "per_element_log_p_X": {name: mean_and_stderr(v / args.large_set_size)
                                               for name, v in per_large.items()},
                       "paired_difference_with_statistician_per_element": {
                           name: mean_and_stderr((v - per_large["statistician"]) / args.large_set_size)
                           for name, v in per_large.items() if name != "statistician"}},
    }
    out["per_set_log_p_D"] = {name: [round(float(x), 4) for x in v] for name, v in per_set.items()}
    out["per_set_log_p_X_large"] = {name: [round(float(x), 4) for x in v] for name, v in per_large.items()}
    out["figure"] = str(oneshot_figure([pairs["homoencoder |X|=class"], pairs["statistician"]], data.test,
                                       args.figure))
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("per_set")}, indent=1))
    _harness.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
