"""Variance layers (Neklyudov et al.) in a VAE on MNIST: does a decoder with a zero-mean
Bayesian layer train, and does an encoder with one learn a useful representation?

Four pairs at equal budget (the same sizes 784-h-h-z, ReLU, Bernoulli, the same epochs,
batch, Adam learning rate and batch order, seed 0) on the first ``--train-size`` dynamically
binarized MNIST training images:

- ``vae + diag``: the ordinary VAE;
- ``variance-vae + diag``: the decoder's middle layer a variance layer (zero-mean weights,
  log-uniform prior), the ordinary encoder;
- ``variance-vae + variance-encoder``: also the encoder's first layer a variance layer;
- ``vae + variance-encoder``: the ordinary decoder with that encoder (the representation
  check without the variance decoder's handicap);
- by ``--pairs`` only, the ablation of the weight noise: ``noiseless variance-vae + diag`` and
  ``vae + noiseless variance-encoder``, the same pairs with each variance layer's unit
  outputting its mean after the ReLU (``NoiselessVariance``; the same start), which leaves the
  features a zero-mean layer can form without the noise.

Each is scored by the importance-sampled test log-likelihood (K ``--num-samples``, on the
first ``--test-size`` test images; for the variance decoder the predictive density
log E_q(W) p(x | W), each particle with its own weights), paired per image against the
ordinary VAE. The representation check: a multinomial logistic regression (scikit-learn,
default L2) fit on the encoder's mean code of the training images, scored on the test
images' codes (the variance encoder's code averaged over 20 draws of the weight noise, and
with a single draw), beside the ordinary encoder's codes and the codes of the same variance
encoder before training.

    OMP_NUM_THREADS=1 python benchmarks/variance_layers.py --data-dir $PYROVAE_DATA \\
        --epochs 10 --train-size 10000 --num-samples 1000 --test-size 500

``--part classifier``: the paper's own check, cheaply. A 784-h-10 ReLU classifier trained
by cross-entropy on the same training images (the same epochs, batch, Adam learning rate,
batch order), with an ordinary hidden layer, with a variance layer there (its weights
zero-mean; the output layer ordinary), and with that variance layer without its noise (each
unit its mean after the ReLU: what the noise costs, apart from the layer's features); test
accuracy on ``--probe-test-size`` test images, the variance network's prediction the average of
the softmax over ``--ensemble`` draws of the weight noise (the paper's test-time averaging) and
from a single draw.

    OMP_NUM_THREADS=1 python benchmarks/variance_layers.py --part classifier --epochs 10

``--init`` and ``--objective`` (the VAE part): the defaults are each pair's (fit's: Burda et
al.'s data-mean start, the closed-form KL for ``vae + diag``); ``--init torch --objective elbo``
reproduces the tables measured when those were the defaults.

Not a test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.nn.variance import VarianceLinear, VarianceMLP
from pyrovae.models import VAE
from pyrovae.guides.variance import VarianceEncoder
from pyrovae.models.variance import VarianceVAE
from pyrovae.nn import INITS

PAIRS = ("vae + diag", "variance-vae + diag", "variance-vae + variance-encoder", "vae + variance-encoder")
NOISELESS = ("noiseless variance-vae + diag", "vae + noiseless variance-encoder")  # the noise's ablation (--pairs)


def build(name, sizes, seed):
    """The pair ``name``; "noiseless" before a part: its variance layers without their noise (the
    ablation of the noise: the same start, each unit its mean)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    model_name, guide_name = name.split(" + ")
    model = VAE(**sizes, activation="relu") if model_name == "vae" else VarianceVAE(**sizes)
    torch.manual_seed(seed + 1)
    guide = (VarianceEncoder(**sizes) if guide_name.endswith("variance-encoder")
             else DiagNormalGuide(**sizes, activation="relu"))
    for part, part_name in ((model, model_name), (guide, guide_name)):
        if part_name.startswith("noiseless "):
            noiseless(part)
    return model, guide


@torch.no_grad()
def codes(guide, x, draws=20):
    guide.eval()
    if isinstance(guide, VarianceEncoder):
        return guide.mean_code(x, draws), guide.encode(x).mean
    mean = guide.encode(x).mean
    return mean, mean


def probe(train_codes, train_y, test_codes, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_codes.numpy())
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train_codes.numpy()), train_y.numpy())
    return float((clf.predict(scaler.transform(test_codes.numpy())) == test_y.numpy()).mean())


def run_one(name, dataset, test, args):
    sizes = {"x_dim": dataset.x_dim, "z_dim": args.z_dim, "hidden_dims": tuple(args.hidden_dims)}
    model, guide = build(name, sizes, args.seed)
    row = {"pair": name, "init": args.init or "default", "objective": args.objective or "default"}
    if isinstance(guide, VarianceEncoder):  # the representation before training
        row["probe_untrained"] = probe(codes(guide, dataset.train["x"])[0], dataset.train["y"],
                                       codes(guide, test["x"])[0], test["y"])
        guide.train()
    t0 = time.perf_counter()
    result = pyrovae.fit(model, guide, dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, progress=False, init=args.init, objective=args.objective)
    row["train_seconds"] = time.perf_counter() - t0
    row["train_loss"] = result.metrics[-1]["train_loss"]
    pyro.set_rng_seed(args.seed)
    x_test = {"x": test["x"][: args.test_size]}
    estimate = pyrovae.log_likelihood(model, guide, x_test, num_samples=args.num_samples)
    row.update(test_ll=estimate.log_likelihood, test_ll_stderr=estimate.stderr, test_elbo=estimate.elbo,
               per_datapoint=estimate.per_datapoint.detach().double())
    tr_mean, _ = codes(guide, dataset.train["x"])
    te_mean, te_one = codes(guide, test["x"])
    row["probe"] = probe(tr_mean, dataset.train["y"], te_mean, test["y"])
    if isinstance(guide, VarianceEncoder):
        row["probe_one_draw"] = probe(tr_mean, dataset.train["y"], te_one, test["y"])
    return row


def table(rows, args, machine) -> str:
    base = rows[0]
    lines = [
        f"Dynamically binarized MNIST, the first {args.num_train} training images; 784-{'-'.join(map(str, args.hidden_dims))}-"
        f"{args.z_dim}, ReLU, Bernoulli; {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, seed {args.seed}, "
        f"init {args.init or 'the default'}, objective {args.objective or 'the default'}; "
        f"test log p(x) with K={args.num_samples} on the first {args.test_size} test images (paired on the same images); "
        f"linear probe: logistic regression on the mean codes of the {args.num_train} training images, accuracy on "
        f"{len(args.probe_test)} test images. {machine}.",
        "",
        *_harness.header(["pair", "train s", "test ELBO", "test log p(x) ± s.e.",
                          "minus the ordinary VAE's (paired s.e.)", "probe accuracy (mean code)", "one draw",
                          "untrained"]),
    ]
    for r in rows:
        diff = ""
        if r is not base:
            d = r["per_datapoint"] - base["per_datapoint"]
            diff = f"{float(d.mean()):+.2f} ± {float(d.std() / len(d) ** 0.5):.2f}"
        one = f"{r['probe_one_draw']:.3f}" if "probe_one_draw" in r else ""
        untrained = f"{r['probe_untrained']:.3f}" if "probe_untrained" in r else ""
        lines.append(f"| {r['pair']} | {r['train_seconds']:.0f} | {r['test_elbo']:.2f} | {r['test_ll']:.2f} ± "
                     f"{r['test_ll_stderr']:.2f} | {diff} | {r['probe']:.3f} | {one} | {untrained} |")
    return "\n".join(lines) + "\n"


class NoiselessVariance(VarianceLinear):
    """A variance layer followed by a ReLU (as everywhere in this benchmark) whose unit outputs its
    mean after the ReLU, E relu(b) = sd(b) / sqrt(2 pi) (with a bias m: E relu(m + sd eps)),
    instead of a draw: the features a zero-mean layer can express (the square root of a
    non-negative combination of the squared inputs), without the noise."""

    def forward(self, x):
        sd = (self.output_variance(x) + 1e-16).sqrt()
        if self.bias is None:
            return sd / math.sqrt(2 * math.pi)
        r = self.bias / sd  # E relu(m + sd eps) = m Phi(m / sd) + sd phi(m / sd)
        normal = torch.distributions.Normal(0.0, 1.0)
        return self.bias * normal.cdf(r) + sd * normal.log_prob(r).exp()


def noiseless(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every variance layer inside ``module`` by a :class:`NoiselessVariance` with its
    parameters (in place; returns ``module``)."""
    for parent in list(module.modules()):
        for key, child in list(parent.named_children()):
            if type(child) is VarianceLinear:
                quiet = NoiselessVariance(child.in_features, child.out_features, bias=child.bias is not None,
                                          prior=child.prior, prior_scale=child.prior_scale)
                quiet.load_state_dict(child.state_dict())
                setattr(parent, key, quiet)
    return module


def classifier_part(dataset, test, args, machine) -> str:
    x, y = dataset.train["x"], dataset.train["y"]
    lines = [f"MNIST grey levels, the first {len(x)} training images; 784-{args.hidden_dims[0]}-10 ReLU classifier, "
             f"cross-entropy, {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, seed {args.seed}; "
             f"test accuracy on {len(test['x'])} test images. {machine}.", "",
             *_harness.header(["hidden layer", "train s", "test accuracy", "one draw"])]
    for kind in ("ordinary", "variance", "noiseless"):
        torch.manual_seed(args.seed)
        net = VarianceMLP(x.shape[1], (args.hidden_dims[0],), 10, variance_layers=() if kind == "ordinary" else (0,))
        if kind == "noiseless":  # the variance layer's start, its noise replaced by its mean
            noiseless(net)
        opt = torch.optim.Adam(net.parameters(), lr=args.lr)
        g = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            for idx in torch.randperm(len(x), generator=g).split(args.batch_size):
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            draws = args.ensemble if kind == "variance" else 1
            probs = torch.stack([net(test["x"]).softmax(-1) for _ in range(draws)])
            acc = float((probs.mean(0).argmax(-1) == test["y"]).float().mean())
            one = float((probs[0].argmax(-1) == test["y"]).float().mean())
        name = {"ordinary": "ordinary", "variance": f"variance layer (mean of {draws} draws)",
                "noiseless": "variance layer without its noise (each unit its mean)"}[kind]
        lines.append(f"| {name} | {seconds:.0f} | {acc:.4f} | {one:.4f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main():
    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, epochs=10, batch_size=100, lr=1e-3, z_dim=20,
                        hidden_dims=[200, 200], num_samples=1000, test_size=500, train_size=10000, seed=0,
                        threads=1, json=None)
    p.add_argument("--probe-test-size", type=int, default=5000, help="test images for the linear probe")
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS + NOISELESS)
    p.add_argument("--part", choices=("vae", "classifier"), default="vae")
    p.add_argument("--ensemble", type=int, default=100, help="draws averaged by the variance classifier")
    p.add_argument("--init", default=None, choices=INITS,
                   help="the VAEs' start (default: each model's, burda; torch: torch's layers, the default then)")
    p.add_argument("--objective", default=None, choices=("elbo", "meanfield"),
                   help="the VAEs' objective (default: each pair's, meanfield for vae + diag; elbo: the default then)")
    args = p.parse_args()
    machine = _harness.start(args)
    dataset = load_dataset("mnist", data_dir=args.data_dir, binarize="none" if args.part == "classifier" else None)
    dataset = dataclasses.replace(dataset, train={k: v[: args.train_size] for k, v in dataset.train.items()})
    args.num_train = len(dataset.train["x"])
    test = {k: v[: args.probe_test_size] for k, v in dataset.test.items()}
    args.probe_test = test["x"]
    if args.part == "classifier":
        print(classifier_part(dataset, test, args, machine))
        return
    rows = []
    for name in args.pairs:
        rows.append(run_one(name, dataset, test, args))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_datapoint"}), flush=True)
    _harness.write_json(args.json, rows)  # per_datapoint as a list
    print(table(rows, args, machine))


if __name__ == "__main__":
    main()
