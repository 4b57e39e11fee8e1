"""Associative Compression Networks on MNIST (Graves, Menick, van den Oord 2018): with a PixelCNN
decoder, the ACN's conditional prior keeps an informative code where a VAE's N(0, I) prior lets
it collapse; the coding cost of both; a daydream figure; and what the neighbour search costs.

``compare`` (default): the first ``--train-size`` MNIST training images (dynamically
binarized, each with its row ``index``), two pairs with the same guide (MLP q(z | x)) and the same
gated PixelCNN decoder conditioned on z (``acn --decoder pixelcnn``): ``--prior knn`` (the ACN,
K = 5 neighbours) and ``--prior standard`` (the VAE), the same epochs, batches and seed. On the
first ``--test-size`` test images (binarized once), per image: KL(q(z | x) || prior) (the ACN's
prior out of training: the mixture over the K nearest training codes; Monte Carlo with
``--kl-samples`` draws), the reconstruction cost -E_q log p(x | z), their sum (the coding cost, in
nats), paired ACN - VAE with standard errors; active units (Cov_x E_q[z] > 0.01); how much the
decoder relies on z (the reconstruction cost with another test image's code, minus with its own:
zero for a decoder that ignores z); and the test accuracy of a 5-nearest-neighbour vote of each
test code among the training images' codes (the paper's evidence that ACN codes carry the
class). The ACN's prior has no fixed scale, so KL and active units alone do not say how
informative its codes are; the last two do, for both models alike. Then
docs/figures/acn-daydream.png: rows of daydreams from test images (the image, then each step:
a random one of the K nearest training codes, z ~ p(z | it), a PixelCNN draw, its code).

``--timing``: the neighbour search at 60k codes. MNIST's 50k training and 10k validation images
as one 60k training set, an MLP decoder (the cheapest epoch, where search weighs most), batches
of ``--batch-size``: seconds of one epoch of the VAE (no search) and of the ACN's second epoch (the
table full at 60,000 codes), and the search alone (60,000 queries in batches against the 60,000
codes). One thread (OMP_NUM_THREADS=1).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/acn_mnist.py            # docs/sets.md
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/acn_mnist.py --timing

``--per-image PATH``: also each test image's costs of both models, for pairing with a reference
(benchmarks/acn_reference.py).
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

from pyrovae import fit
from pyrovae.data import load_dataset
from pyrovae.evaluation.plots import image_grid, save_figure
from pyrovae.guides import AcnGuide
from pyrovae.infer.importance import mean_and_stderr
from pyrovae.models import AssociativeCompressionNetwork
from pyrovae.data.indexed import with_index
from pyrovae.models.acn_table import knn
from pyrovae.registry import pair_guide

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "acn-daydream.png"


def build(args, prior: str, decoder: str):
    model = AssociativeCompressionNetwork(x_dim=784, z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims),
                                          prior=prior, num_neighbours=args.neighbours, decoder=decoder,
                                          num_layers=args.num_layers, pixel_channels=args.pixel_channels,
                                          pixel_stacks=args.pixel_stacks)
    guide = AcnGuide(x_dim=784, z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims))
    return model, pair_guide(model, guide)


@torch.no_grad()
def coding_cost(model, guide, x: torch.Tensor, samples: int, batch: int = 100) -> dict:
    """Per image (eval mode): KL(q || prior) by Monte Carlo, -E_q log p(x|z), the same cost with
    the code of another test image (a fixed derangement: how much the decoder relies on z), and the
    posterior means."""
    model.eval(), guide.eval()
    other = torch.roll(torch.arange(len(x)), 1)
    kls, recs, swapped, means = [], [], [], []
    for i in range(0, len(x), batch):
        xb, ob = x[i:i + batch], x[other[i:i + batch]]
        q, prior = guide.encode(xb), model.prior(xb)
        z = q.sample((samples,))  # (S, B, Z)
        z_other = guide.encode(ob).sample((samples,))
        kls.append((q.log_prob(z) - prior.log_prob(z)).mean(0))
        recs.append(-torch.stack([model.likelihood(z[s], xb).log_prob(xb) for s in range(samples)]).mean(0))
        swapped.append(-torch.stack([model.likelihood(z_other[s], xb).log_prob(xb) for s in range(samples)]).mean(0))
        means.append(q.mean)
    return {"kl": torch.cat(kls), "reconstruction": torch.cat(recs), "swapped": torch.cat(swapped),
            "means": torch.cat(means)}


@torch.no_grad()
def code_probes(train_means, train_y, test_means, test_y, train_x, test_x, k: int = 5) -> dict:
    """The test accuracy of a k-nearest-neighbour vote (Euclidean, posterior means) against the
    training images' codes (``knn_raw``), and what the codes say about the class beyond it (why
    the ACN's codes classified worse than the VAE's): the same vote on codes standardized per
    dimension by the training codes' mean and s.d., and on whitened codes (their principal axes
    at unit variance);
    a linear probe (logistic regression on the standardized codes, sklearn); and how much of the
    codes is the ink, the share of an image's pixels that are on (stroke width and size, not
    the class): R^2 of a linear fit of the ink from the codes (test images), and R^2 of the ink
    along the codes' first principal axis alone."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    def vote(train_codes, test_codes):
        _, rows = knn(test_codes, train_codes, k)
        votes = torch.nn.functional.one_hot(train_y[rows], 10).sum(1)
        return float((votes.argmax(1) == test_y).float().mean())

    mean, sd = train_means.mean(0), train_means.std(0).clamp_min(1e-6)
    std_train, std_test = (train_means - mean) / sd, (test_means - mean) / sd
    values, vectors = torch.linalg.eigh(torch.cov((train_means - mean).T))
    values, vectors = values.flip(0), vectors.flip(1)
    whiten = vectors / values.clamp_min(1e-8).sqrt()
    white_train, white_test = (train_means - mean) @ whiten, (test_means - mean) @ whiten
    probe = LogisticRegression(max_iter=2000).fit(std_train.numpy(), train_y.numpy())
    ink_train, ink_test = train_x.mean(1).numpy(), test_x.mean(1).numpy()
    ink_fit = LinearRegression().fit(std_train.numpy(), ink_train)
    first_train, first_test = white_train[:, :1].numpy(), white_test[:, :1].numpy()
    first_fit = LinearRegression().fit(first_train, ink_train)
    return {"knn_raw": vote(train_means, test_means), "knn_standardized": vote(std_train, std_test),
            "knn_whitened": vote(white_train, white_test),
            "linear_probe": float(probe.score(std_test.numpy(), test_y.numpy())),
            "ink_r2_from_codes": float(ink_fit.score(std_test.numpy(), ink_test)),
            "ink_r2_from_first_axis": float(first_fit.score(first_test, ink_test)),
            "first_axis_share_of_variance": float(values[0] / values.sum())}


def daydream_figure(model, x0: torch.Tensor, steps: int, path: Path) -> Path:
    walk = model.daydream(x0, steps, generator=torch.Generator().manual_seed(0))  # (N, steps + 1, 784)
    grid = image_grid(walk.reshape(-1, 784), (28, 28), ncol=steps + 1)
    fig = Figure(figsize=(1.0 * (steps + 1), 1.0 * len(x0) + 0.4))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("ACN daydreams: a test image (left), then code -> random one of its 5 nearest training codes -> "
                 "z ~ p(z | it) -> PixelCNN draw", fontsize=7)
    return save_figure(fig, path)


def compare(args) -> dict:
    mnist = load_dataset("mnist")
    train = {k: v[:args.train_size] for k, v in mnist.train.items()}
    valid = {k: v[:500] for k, v in mnist.valid.items()}
    data = with_index(dataclasses.replace(mnist, train=train, valid=valid))
    test, test_y = mnist.test["x"][:args.test_size], mnist.test["y"][:args.test_size]
    results, pairs = {}, {}
    for prior in ("knn", "standard"):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model, guide = build(args, prior, "pixelcnn")
        t0 = time.perf_counter()
        result = fit(model, guide, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     progress=False)
        seconds = time.perf_counter() - t0
        pyro.set_rng_seed(0)
        cost = coding_cost(model, guide, test, args.kl_samples)
        active = int((cost["means"].var(0) > 0.01).sum())
        train_x = train["x"].bernoulli(generator=torch.Generator().manual_seed(0))
        train_means = torch.cat([guide.encode(train_x[i:i + 1000]).mean for i in range(0, len(train_x), 1000)])
        probes = code_probes(train_means, train["y"], cost["means"], test_y, train_x, test)
        results[prior] = {"fit_seconds": round(seconds, 1), "epochs": [
            {k: round(v, 3) for k, v in m.items() if isinstance(v, float)} for m in result.metrics],
            "kl": mean_and_stderr(cost["kl"]), "reconstruction": mean_and_stderr(cost["reconstruction"]),
            "coding_cost": mean_and_stderr(cost["kl"] + cost["reconstruction"]), "active_units": active,
            "reconstruction_with_another_images_code": mean_and_stderr(cost["swapped"]),
            "decoder_reliance_on_z": mean_and_stderr(cost["swapped"] - cost["reconstruction"]),
            "knn5_test_accuracy_from_codes": probes.pop("knn_raw"), "code_probes": probes}
        pairs[prior] = (model, guide, cost)
        print(prior, json.dumps(results[prior]), flush=True)
    a, v = pairs["knn"][2], pairs["standard"][2]
    out = {
        "budget": {"train_images": args.train_size, "epochs": args.epochs, "batch_size": args.batch_size,
                   "lr": args.lr, "threads": torch.get_num_threads(), "test_images": args.test_size,
                   "kl_samples": args.kl_samples},
        "sizes": {"z_dim": args.z_dim, "hidden_dims": args.hidden_dims, "pixelcnn_layers": args.num_layers,
                  "pixel_channels": args.pixel_channels, "pixel_stacks": args.pixel_stacks,
                  "neighbours": args.neighbours},
        "acn": results["knn"], "vae": results["standard"],
        "paired_acn_minus_vae": {key: mean_and_stderr(a[key] - v[key]) for key in ("kl", "reconstruction", "swapped")}
        | {"coding_cost": mean_and_stderr(a["kl"] + a["reconstruction"] - v["kl"] - v["reconstruction"])},
    }
    if args.per_image:
        per_image = {name: {key: pairs[prior][2][key].tolist() for key in ("kl", "reconstruction", "swapped")}
                     for name, prior in (("acn", "knn"), ("vae", "standard"))}
        Path(args.per_image).write_text(json.dumps(per_image))
    t0 = time.perf_counter()
    pyro.set_rng_seed(0)
    out["figure"] = str(daydream_figure(pairs["knn"][0], test[:args.daydreams], args.steps, args.figure))
    out["daydream_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def timing(args) -> dict:
    mnist = load_dataset("mnist")
    train = {"x": torch.cat([mnist.train["x"], mnist.valid["x"]]), "y": torch.cat([mnist.train["y"], mnist.valid["y"]])}
    data = with_index(dataclasses.replace(mnist, train=train, valid={k: v[:500] for k, v in mnist.valid.items()}))
    n = len(train["x"])
    out = {"codes": n, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "decoder": "mlp",
           "z_dim": args.z_dim, "hidden_dims": args.hidden_dims}
    for prior, epochs in (("standard", 1), ("knn", 2)):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model, guide = build(args, prior, "mlp")
        result = fit(model, guide, data, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     progress=False)
        out[f"epoch_seconds_{prior}"] = [round(m["seconds"], 1) for m in result.metrics]
        print(prior, out[f"epoch_seconds_{prior}"], flush=True)
    codes = model.table.codes
    t0 = time.perf_counter()
    for i in range(0, n, args.batch_size):
        index = torch.arange(i, min(i + args.batch_size, n))
        knn(codes[index], codes, args.neighbours, exclude=index)
    out["search_seconds_per_epoch"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> dict:
    p = _harness.parser(__doc__.split("\n\n")[0], train_size=10000, test_size=1000, epochs=5, batch_size=64,
                        lr=1e-3, z_dim=16, seed=0, figure=FIGURE, json=None)
    p.add_argument("--timing", action="store_true", help="time the neighbour search at 60k codes instead")
    p.add_argument("--hidden-dims", type=int, nargs="*", default=[256])
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--pixel-channels", type=int, default=16)
    p.add_argument("--pixel-stacks", type=int, choices=(1, 2),
                   default=AssociativeCompressionNetwork.Options.pixel_stacks,
                   help="the PixelCNN's stacks: 1 masked (a blind spot), 2 vertical and horizontal (default: the model's)")
    p.add_argument("--neighbours", type=int, default=5)
    p.add_argument("--kl-samples", type=int, default=20)
    p.add_argument("--daydreams", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--per-image", default=None, metavar="PATH",
                   help="also write each test image's KL, reconstruction and swapped cost of both models "
                        "(JSON; benchmarks/acn_reference.py pair reads it)")
    args = p.parse_args(argv)
    out = timing(args) if args.timing else compare(args)
    print(json.dumps(out, indent=1))
    _harness.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
