"""The data-mean output start (``--init burda``) against torch's layers (``--init torch``), model
by model, at a small budget: what decides each model's default init (pyrovae.nn.default_init).

For each model the pair ``pyrovae fit --model M`` builds (its own guide, the data's sizes, the
options' defaults; ``--hidden-dims`` where a model's default would not fit the budget), trained
twice from the same seed, the same batches and the same budget, once from torch's layers and
once from Glorot's layers with the decoder's output bias at the data's mean (Burda et al.): the
logits of the mean pixel or of the training keys' frequencies, the Gaussian's mean, the
logistics' locations. Scored on the same test rows: log p(x) importance-sampled with K
samples (``linear``: exact), and the per-row difference burda - torch with its paired
standard error; the final training loss; CPU seconds of training.

    OMP_NUM_THREADS=1 python benchmarks/init_defaults.py --models conv-vae vrnn --json init.json
    OMP_NUM_THREADS=1 python benchmarks/init_defaults.py --models dmm --inits burda data   # two other starts
    OMP_NUM_THREADS=1 python benchmarks/init_defaults.py --models vae-gaussian vae-continuous-bernoulli --seed 1
    OMP_NUM_THREADS=1 python benchmarks/init_defaults.py --models vae-gaussian --epochs 30 --num-train 50000  # longer

Not a test.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pyro
import torch

import _harness  # benchmarks/_harness.py
import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.evaluation.compare import paired_difference
from pyrovae.registry import build, get_guide, get_model
from pyrovae.guides.base import objective_for
from pyrovae.infer.objectives import make_objective
from pyrovae.models.base import guide_name_of
from pyrovae.nn import INITS

#: per entry: data set, epochs, training rows, test rows, K, options, batch size; ``model`` (the
#: registered model, when the entry's name is not one) and ``binarize`` (the data set's default
#: when absent) where given. The ``vae-*`` entries are ``vae`` with a real-valued likelihood on
#: clean grey-level MNIST (``--binarize none``) at docs/hidden-talents.md's budget A (10 epochs on
#: the first 10,000 training images; K = 1000 on the first 500 test images): docs/vae.md#initialisation.
VAE_REAL = dict(model="vae", data="mnist", binarize="none", epochs=10, train=10000, test=500, k=1000)
SETTINGS = {
    "vae-gaussian": dict(VAE_REAL, options={"likelihood": "gaussian"}),  # a learned scale per pixel
    "vae-gaussian-fixed": dict(VAE_REAL, options={"likelihood": "gaussian", "scale": 0.1}),
    "vae-continuous-bernoulli": dict(VAE_REAL, options={"likelihood": "continuous_bernoulli"}),
    "vae-logistic-mixture": dict(VAE_REAL, options={"likelihood": "logistic-mixture"}),
    "svae-gaussian": dict(VAE_REAL, model="svae", options={"likelihood": "gaussian"}),
    "variance-vae": dict(data="mnist", epochs=1, train=5000, test=300, k=50, options={}),
    "conv-vae": dict(data="mnist", epochs=1, train=5000, test=300, k=50, options={}),
    "pixelcnn-vae": dict(data="mnist", epochs=1, train=2000, test=200, k=10, options={"num_layers": 3}),
    "vrnn": dict(data="bach-chorales", epochs=3, train=None, test=None, k=20, options={}, batch=20),
    "dmm": dict(data="bach-chorales", epochs=3, train=None, test=None, k=20, options={}, batch=20),
    "hmm-vae": dict(data="digit-sequences", epochs=5, train=None, test=None, k=20, options={}, batch=32),
    "robust": dict(data="robust-synthetic", epochs=100, train=2000, test=500, k=100, options={"z_dim": 3},
                   batch=200),
    "linear": dict(data="ppca-synthetic", epochs=100, train=2000, test=500, k=0, options={"z_dim": 2}, batch=200),
}


def synthetic(name: str, seed: int = 0) -> dict:
    """Real-valued rows for the linear models: rank 3 in 30 dimensions with 20% of the entries
    replaced by outliers in [-10, 10] (``robust``, benchmarks/robust_pca.py's data), or rank 2 in
    8 dimensions plus N(0, 0.25) noise (``linear``), a mean of 2 added to each; 2000 + 500 rows."""
    g = torch.Generator().manual_seed(seed)
    n, d, rank = 2500, (30 if name == "robust-synthetic" else 8), (3 if name == "robust-synthetic" else 2)
    x = torch.randn(n, rank, generator=g) @ torch.randn(d, rank, generator=g).T + 2.0
    if name == "robust-synthetic":
        x = x + 0.1 * torch.randn(n, d, generator=g)
        outliers = torch.rand(n, d, generator=g) < 0.2
        x = torch.where(outliers, (2 * torch.rand(n, d, generator=g) - 1) * 10, x)
    else:
        x = x + 0.5 * torch.randn(n, d, generator=g)
    return {"train": {"x": x[:2000]}, "test": {"x": x[2000:]}, "dims": {"x_dim": d}}


def subset(split: dict, rows):
    return split if rows is None else {k: v[:rows] for k, v in split.items()}


def data_for(setting: dict, data_dir):
    if setting["data"].endswith("synthetic"):
        data = synthetic(setting["data"])
        return data["train"], data["test"], data["dims"], None
    dataset = load_dataset(setting["data"], data_dir=data_dir, binarize=setting.get("binarize"))
    train, test = subset(dataset.train, setting["train"]), subset(dataset.test, setting["test"])
    return train, test, dataset.dims(), dataset


def score(model, guide, test: dict, k: int) -> torch.Tensor:
    """log p(x) per test row (exact for ``linear``; tau integrated out for ``robust``)."""
    from pyrovae.guides.robust import log_likelihood_z_only
    from pyrovae.models import LinearGaussianVAE, RobustVAE

    model.eval(), guide.eval()
    with torch.no_grad():
        if isinstance(model, LinearGaussianVAE):
            return model.log_marginal(test["x"]).double()
        if isinstance(model, RobustVAE):
            return log_likelihood_z_only(model, guide, test["x"], num_samples=k).double()
    return pyrovae.log_likelihood(model, guide, test, num_samples=k).per_datapoint.detach().double()


def run(name: str, init: str, args) -> dict:
    setting = dict(SETTINGS[name])
    setting.update({key: value for key, value in (("epochs", args.epochs), ("train", args.num_train))
                    if value is not None})  # a longer (or shorter) budget than the entry's
    if args.quick:  # a smoke run: the script runs, the figures mean nothing
        setting.update(epochs=1, train=300, test=20, k=min(setting["k"], 3))
    train, test, dims, dataset = data_for(setting, args.data_dir)
    factory = get_model(setting.get("model", name))
    guide_factory = get_guide(guide_name_of(factory))
    fill = {k: v for k, v in dims.items() if k != "likelihood"}
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)  # the same torch layers for both inits
    model = build(factory, dict(setting["options"]), fill=fill)
    guide = build(guide_factory, {k: v for k, v in setting["options"].items()
                                  if k in ("z_dim", "hidden_dims")}, fill=fill)
    source = train if dataset is None else dataclasses.replace(dataset, train=train, test=test)
    t0 = time.process_time()
    # the pair's default objective as an Objective: a name would take the model's KL warm-up (vrnn, hvae)
    objective = make_objective(objective_for(model, guide), warmup_steps=args.kl_warmup)
    result = pyrovae.fit(model, guide, source, objective=objective, epochs=setting["epochs"], batch_size=setting.get("batch", 100),
                         lr=args.lr, seed=args.seed, progress=False, figures=False, init=init)
    seconds = time.process_time() - t0
    pyro.set_rng_seed(args.seed)
    ll = score(model, guide, test, setting["k"])
    return {"model": name, "init": init, "data": setting["data"], "binarize": setting.get("binarize"),
            "options": setting["options"], "seed": args.seed, "epochs": setting["epochs"], "train_rows": len(next(iter(train.values()))),
            "test_rows": len(ll), "k": setting["k"], "train_loss": result.metrics[-1]["train_loss"],
            "cpu_seconds": seconds, "test_ll": float(ll.mean()), "per_datapoint": ll}


def main():
    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, lr=1e-3, seed=0, threads=1, json=None)
    p.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--epochs", type=int, default=None, help="epochs for every entry (default: each entry's)")
    p.add_argument("--num-train", type=int, default=None,
                   help="training rows for every entry, the first ones (default: each entry's)")
    p.add_argument("--kl-warmup", type=int, default=0, help="linear KL warm-up in steps for the latent models (default 0, as the documented runs; pyrovae fit's own default is each model's: vrnn 1000, hvae 2500)")
    p.add_argument("--quick", action="store_true", help="one epoch on 300 rows, 20 test rows, K <= 3 (a smoke run)")
    p.add_argument("--inits", nargs=2, default=["torch", "burda"], choices=INITS, metavar="INIT",
                   help="the two starts compared, the second against the first (default: torch burda)")
    args = p.parse_args()
    machine = _harness.start(args)
    rows, cells = [], []
    for name in args.models:
        first, second = args.inits
        pair = [run(name, init, args) for init in args.inits]
        d = paired_difference(pair[1]["per_datapoint"], pair[0]["per_datapoint"])
        for r in pair:
            r[f"{second}_minus_{first}"], r["paired_stderr"] = d.mean, d.stderr
            print(json.dumps(_harness.summary(r)), flush=True)
        rows += pair
        _harness.write_json(args.json, rows)
        s = pair[0]
        cells.append([name, s["data"], f"{s['epochs']}", f"{s['train_rows']}", f"{s['test_rows']}",
                      "exact" if s["k"] == 0 else f"{s['k']}", f"{pair[0]['test_ll']:.2f}", f"{pair[1]['test_ll']:.2f}",
                      f"{d.mean:+.2f} ± {d.stderr:.2f}", f"{pair[0]['train_loss']:.2f} / {pair[1]['train_loss']:.2f}",
                      f"{pair[0]['cpu_seconds']:.0f} / {pair[1]['cpu_seconds']:.0f}"])
    print(f"seed {args.seed}, Adam {args.lr}; {machine}\n")
    print(_harness.table(["model", "data", "epochs", "train rows", "test rows", "K", f"log p(x), {first}",
                          f"log p(x), {second}", f"{second} - {first} (paired s.e.)",
                          f"final train loss {first} / {second}", f"CPU s {first} / {second}"], cells))


if __name__ == "__main__":
    main()
