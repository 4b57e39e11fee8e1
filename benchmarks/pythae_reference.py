"""Run pythae's models (clementchadebec/benchmark_VAE) unchanged on the local MNIST IDX files:
the reference runs of docs/vae.md, docs/guides.md and docs/objectives.md ("against pythae").

pythae's own model classes, loss functions, training pipeline (``TrainingPipeline`` and its
``BaseTrainer``: Adam, shuffled ``DataLoader``, evaluation every epoch, the best epoch on the
validation loss kept) and log-likelihood estimator (``model.get_nll``, importance sampling
with the encoder as proposal) do the work. What this script adds is only what pythae leaves
to its user:

- the data. The IDX files (``$MNIST_IDX``, default ``$PYROVAE_DATA/mnist``) are read with
  numpy and split as the suite's ``mnist`` data set splits them: train the first 50,000
  training images (``--num-train`` fewer), valid the last 10,000, test the t10k file; grey
  levels divided by 255. Valid and test are binarized once with one ``torch.Generator``
  seeded 0, test first (the suite's draw, so both score the same binary test images); the
  training images are binarized dynamically, a new Bernoulli draw each time an image is
  read (a ``torch.utils.data.Dataset`` handed to the pipeline, as its API allows). Checked
  once against ``pyrovae.data.load_dataset("mnist")``: the same train grey levels and the
  same binary valid and test tensors (torch 2.13);
- the networks, passed through pythae's public API (``BaseEncoder``/``BaseDecoder``):
  the suite's MLP, ``--hidden-dims`` (default 200 200) with tanh, the encoder's last layer
  giving the Gaussian's mean and log-variance (``--model svae``: mean direction and log
  concentration), the decoder's sigmoid giving the Bernoulli means (pythae's ``bce``);
  torch's default layer initialisation, as pythae's own networks have;
- the seed (torch's global seed before the model is built; pythae's ``set_seed`` before
  training) and one torch thread.

Scoring: ``model.get_nll(x, n_samples=K, batch_size=K)`` image by image on the first
``--test-size`` test images (it returns the mean log p(x) of the images it is given, so one
image at a time gives each image's figure). ``--paired FILE`` reads a ``pyrovae evaluate``
result file of the same images (its ``per_datapoint``) and prints the paired difference.

Setup, in a scratch folder outside this repository (pythae 0.1.2 from PyPI; torch first,
so pip keeps the CPU wheel):

    python -m venv .venv && . .venv/bin/activate
    pip install torch==2.13.0 && pip install pythae==0.1.2
    cp PATH/TO/benchmarks/pythae_reference.py .
    PYROVAE_DATA=/path/to/data nice python pythae_reference.py --model vae --epochs 10 \\
        --seed 0 --out runs/vae-s0 --json runs/vae-s0.json \\
        --paired runs/ours-vae-s0/evaluation-test-K1000-limit1000.json

and the suite's side at the same budget (its defaults; 50,000 images, batch 100, Adam 1e-3):

    pyrovae fit --data mnist --z-dim 50 --epochs 10 --seed 0 --threads 1 --eval-samples 0 \\
        --out runs/ours-vae-s0
    pyrovae evaluate runs/ours-vae-s0 --num-samples 1000 --limit 1000 --json

``--likelihood mse`` (with ``--model vae``): pythae's ``reconstruction_loss="mse"``, a
unit-variance Gaussian (``1/2 ||x - f(z)||^2``, the least-squares VAE's loss without its weight
penalty), its decoder's mean linear; the data benchmarks/least_squares.py uses (grey levels
dequantized ``(255 x + u) / 256`` with its draws: train seed ``--seed``, test seed ``--seed`` +
100, so ``--test-size`` must equal its ``--test-size``), fixed, not binarized:

    nice python pythae_reference.py --model vae --likelihood mse --z-dim 20 --num-train 10000 \
        --epochs 10 --test-size 500 --seed 0 --out runs/lsq-s0 --json runs/lsq-s0.json

``--model``: ``vae`` (pythae ``VAE``), ``iwae`` (``IWAE``, ``--particles`` samples), ``iaf``
(``VAE_IAF``: ``--made-blocks`` MADEs of ``--made-layers`` hidden layers of
``--made-hidden`` units), ``infovae`` (``INFOVAE_MMD``: ``--alpha``, ``--lam``, ``--kernel``,
kernel bandwidth 1, i.e. scale 2 z_dim as the suite's default), ``svae`` (``SVAE``, the
hyperspherical VAE).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time

MODELS = ("vae", "iwae", "iaf", "infovae", "svae")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="vae")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[200, 200])
    p.add_argument("--num-train", type=int, default=50000, help="the first N of the 50,000 training images")
    p.add_argument("--test-size", type=int, default=1000, help="score the first N test images")
    p.add_argument("--num-samples", type=int, default=1000, help="importance samples K per test image")
    p.add_argument("--particles", type=int, default=5, help="iwae: samples per datapoint")
    p.add_argument("--made-blocks", type=int, default=2, help="iaf: MADE blocks (pythae's default 2)")
    p.add_argument("--made-layers", type=int, default=3, help="iaf: hidden layers per MADE (pythae's default 3)")
    p.add_argument("--made-hidden", type=int, default=128, help="iaf: units per MADE layer (pythae's default 128)")
    p.add_argument("--alpha", type=float, default=0.0, help="infovae: alpha")
    p.add_argument("--lam", type=float, default=1000.0, help="infovae: lambda")
    p.add_argument("--kernel", choices=("rbf", "imq"), default="rbf", help="infovae: kernel")
    p.add_argument("--out", default="runs/pythae", help="pythae's output_dir (its checkpoints)")
    p.add_argument("--json", help="write the figures (and each test image's log p(x)) here")
    p.add_argument("--paired", help="a pyrovae evaluate result file of the same test images: print the paired "
                                    "difference pythae - it")
    p.add_argument("--likelihood", choices=("bce", "mse"), default="bce",
                   help="bce: binarized MNIST, Bernoulli pixels (sigmoid decoder); mse: dequantized grey levels, "
                        "pythae's reconstruction_loss='mse' (a unit-variance Gaussian, linear decoder), the data of "
                        "benchmarks/least_squares.py")
    p.add_argument("--mnist", default=None, help="the IDX folder (default $MNIST_IDX, else $PYROVAE_DATA/mnist)")
    return p.parse_args(argv)


def read_idx(folder, name):
    import numpy as np

    path = os.path.join(folder, name)
    opener = gzip.open if os.path.exists(path + ".gz") else open
    with opener(path + ".gz" if opener is gzip.open else path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(folder, num_train):
    """Grey train (first ``num_train`` of 50,000), binary valid and test (seed 0, test first)."""
    import torch

    train = read_idx(folder, "train-images-idx3-ubyte").reshape(60000, 784).astype("float32") / 255.0
    test = read_idx(folder, "t10k-images-idx3-ubyte").reshape(10000, 784).astype("float32") / 255.0
    generator = torch.Generator().manual_seed(0)
    test = torch.bernoulli(torch.from_numpy(test), generator=generator)
    valid = torch.bernoulli(torch.from_numpy(train[50000:]), generator=generator)
    return torch.from_numpy(train[:min(num_train, 50000)]), valid, test


def dequantize(x, seed):
    """``(255 x + u) / 256``, ``u ~ U(0, 1)`` from one generator seeded ``seed`` (benchmarks/least_squares.py's)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return (255 * x + torch.rand(x.shape, generator=generator)) / 256


def load_mnist_grey(folder, num_train, test_size, seed):
    """Dequantized grey levels as benchmarks/least_squares.py draws them: train the first ``num_train``
    (seed ``seed``), test the first ``test_size`` test images (seed ``seed + 100``); valid the last 10,000
    training images (seed ``seed + 200``; pythae keeps the epoch of the best validation loss)."""
    import torch

    train = read_idx(folder, "train-images-idx3-ubyte").reshape(60000, 784).astype("float32") / 255.0
    test = read_idx(folder, "t10k-images-idx3-ubyte").reshape(10000, 784).astype("float32") / 255.0
    return (dequantize(torch.from_numpy(train[:min(num_train, 50000)]), seed),
            dequantize(torch.from_numpy(train[50000:]), seed + 200),
            dequantize(torch.from_numpy(test[:test_size]), seed + 100))


def build(args):
    """pythae's model for ``args.model`` with the suite's MLP as its encoder and decoder."""
    import torch
    from torch import nn
    from pythae.models import (IWAE, SVAE, VAE, VAE_IAF, INFOVAE_MMD, INFOVAE_MMD_Config, IWAEConfig,
                               SVAEConfig, VAEConfig, VAE_IAF_Config)
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    def mlp(sizes):
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        return nn.Sequential(*layers)

    hidden = list(args.hidden_dims)

    class Encoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.body = mlp([784] + hidden)
            self.loc = nn.Linear(hidden[-1], args.z_dim)
            self.spread = nn.Linear(hidden[-1], 1 if args.model == "svae" else args.z_dim)

        def forward(self, x):
            h = self.body(x.reshape(x.shape[0], -1))
            if args.model == "svae":
                return ModelOutput(embedding=self.loc(h), log_concentration=self.spread(h))
            return ModelOutput(embedding=self.loc(h), log_covariance=self.spread(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.body = mlp([args.z_dim] + hidden[::-1])
            self.out = nn.Linear(hidden[0], 784)

        def forward(self, z):
            mean = self.out(self.body(z))
            return ModelOutput(reconstruction=mean if args.likelihood == "mse" else torch.sigmoid(mean))

    common = dict(input_dim=(784,), latent_dim=args.z_dim, reconstruction_loss=args.likelihood)
    if args.model == "vae":
        model_cls, config = VAE, VAEConfig(**common)
    elif args.model == "iwae":
        model_cls, config = IWAE, IWAEConfig(**common, number_samples=args.particles)
    elif args.model == "iaf":
        model_cls, config = VAE_IAF, VAE_IAF_Config(**common, n_made_blocks=args.made_blocks,
                                                     n_hidden_in_made=args.made_layers, hidden_size=args.made_hidden)
    elif args.model == "infovae":
        model_cls, config = INFOVAE_MMD, INFOVAE_MMD_Config(**common, kernel_choice=args.kernel, alpha=args.alpha,
                                                            lbd=args.lam, kernel_bandwidth=1.0)
    else:
        model_cls, config = SVAE, SVAEConfig(**common)
    torch.manual_seed(args.seed)
    return model_cls(model_config=config, encoder=Encoder(), decoder=Decoder())


def dynamic_dataset(grey):
    """A pythae data set whose every read of an image is a new Bernoulli draw of its grey levels."""
    import torch
    from pythae.data.datasets import DatasetOutput

    class DynamicBinarized(torch.utils.data.Dataset):
        def __len__(self):
            return len(grey)

        def __getitem__(self, index):
            x = grey[index]
            return DatasetOutput(data=torch.bernoulli(x), labels=torch.zeros(()))

    return DynamicBinarized()


def score(model, test, num_samples):
    """Each test image's log p(x) by pythae's ``get_nll`` (K = ``num_samples``)."""
    import torch

    model.eval()
    with torch.no_grad():
        return [float(model.get_nll(test[i:i + 1], n_samples=num_samples, batch_size=num_samples))
                for i in range(len(test))]


def mean_se(values):
    n = len(values)
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import pythae
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    torch.set_num_threads(1)
    folder = args.mnist or os.environ.get("MNIST_IDX") or os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")
    if args.likelihood == "mse":
        train, valid, test = load_mnist_grey(folder, args.num_train, args.test_size, args.seed)
    else:
        train, valid, test = load_mnist(folder, args.num_train)
    model = build(args)
    config = BaseTrainerConfig(output_dir=args.out, num_epochs=args.epochs, learning_rate=args.lr,
                               per_device_train_batch_size=args.batch_size,
                               per_device_eval_batch_size=args.batch_size, seed=args.seed, no_cuda=True)
    pipeline = TrainingPipeline(training_config=config, model=model)
    t0, c0 = time.perf_counter(), time.process_time()
    pipeline(train_data=dynamic_dataset(train) if args.likelihood == "bce" else train, eval_data=valid)
    fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    best = pipeline.trainer._best_model
    test = test[:args.test_size]
    t0 = time.perf_counter()
    per = score(best, test, args.num_samples)
    ll, se = mean_se(per)
    result = {"pythae": getattr(pythae, "__version__", None) or _dist_version("pythae"),
              "torch": torch.__version__, "model": args.model, "args": vars(args),
              "log_likelihood": ll, "stderr": se, "num_datapoints": len(per), "num_samples": args.num_samples,
              "fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu, "cpu_s_per_epoch": fit_cpu / args.epochs,
              "score_wall_s": time.perf_counter() - t0}
    print(f"pythae {args.model}: test log p(x) (K={args.num_samples}, {len(per)} images) {ll:.2f} ± {se:.2f} nats; "
          f"fit {fit_cpu:.0f} s CPU ({fit_cpu / args.epochs:.1f} s/epoch), {fit_wall:.0f} s wall")
    if args.paired:
        with open(args.paired) as f:
            theirs = json.load(f)["per_datapoint"]
        if len(theirs) < len(per):
            raise SystemExit(f"{args.paired} scores {len(theirs)} images, fewer than {len(per)}")
        diff = [a - b for a, b in zip(per, theirs)]
        d, dse = mean_se(diff)
        result["paired"] = {"file": args.paired, "other": mean_se(theirs[:len(per)])[0], "diff": d, "diff_stderr": dse}
        print(f"paired, pythae - {args.paired}: {d:+.2f} ± {dse:.2f} nats (it: {result['paired']['other']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "per_datapoint": per}, f)
    return 0


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
