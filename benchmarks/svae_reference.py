"""Run the S-VAE authors' MNIST example, nicola-decao/s-vae-pytorch ``examples/mnist.py``,
unchanged on the local MNIST IDX files, and score its weights on the suite's test images: the
reference of docs/hidden-talents.md ("Against the authors' code at equal budget").

``train``: the example file's code above its driver (the line "# hidden dimension and
dimension of latent space") is executed as is: its loaders (batch 64, shuffled), ``ModelVAE``
(encoder 784-256-128, decoder z-128-256-784, ReLU; softplus scale, softplus + 1
concentration, torch's default layers), ``train`` (dynamic binarization ``x > U(0, 1)``, BCE
plus the closed-form KL, one Adam step per batch) and ``log_likelihood``. Two things are
adapted: torchvision's ``datasets.MNIST`` is replaced by a class that reads the IDX files
(``$PYROVAE_DATA/mnist``) with numpy, the first ``--train-size`` training images, grey levels
/ 255 as ``ToTensor`` gives; and the driver: the example builds the normal VAE at ``Z_DIM``
and the S-VAE at ``Z_DIM + 1`` with ``H_DIM = 128`` and trains each one epoch at
``Z_DIM = 5``; here the same construction (after ``torch.manual_seed(--seed)``, Adam 1e-3) is
trained at each ``--z-dims`` for ``--epochs`` epochs (its ``train`` once per epoch), and the
weights are saved in ``--out``.

``score``: the example's estimator (K draws of its q(z|x), its p(z) and decoder;
logsumexp - log K), kept per image, with K = ``--num-samples`` on the first ``--test-size``
images of the suite's fixed binarization of the MNIST test set (``load_dataset("mnist").test``),
the images ``benchmarks/svae_vs_gaussian.py`` scores ours on; writes ``<dist>_z<Z>_ll.pt``.

Setup, in a scratch folder outside this repository (the example needs scipy):

    git --git-dir=S-VAE-PYTORCH/.git archive 671c46c0772a2c92a602252311864c48c816bc44 | tar -x
    cp PATH/TO/benchmarks/svae_reference.py .
    python svae_reference.py train --z-dims 2 3 5 --epochs 10 --train-size 20000 --out out
    python svae_reference.py score --z-dims 2 3 5 --num-samples 500 --test-size 1000 --out out
"""
import argparse
import gzip
import json
import os
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
H_DIM = 128


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def example(train_size):
    """The example's definitions (its code above the driver), with MNIST read from the IDX files."""

    class MNIST(torch.utils.data.Dataset):
        """In torchvision's place: (1, 28, 28) float images in [0, 1] and int labels."""

        def __init__(self, root, train=True, download=False, transform=None):
            folder = os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")
            part = "train" if train else "t10k"
            x = read_idx(os.path.join(folder, f"{part}-images-idx3-ubyte.gz"))
            y = read_idx(os.path.join(folder, f"{part}-labels-idx1-ubyte.gz"))
            if train:
                x, y = x[:train_size], y[:train_size]
            self.x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
            self.y = torch.from_numpy(y.astype(np.int64))

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(MNIST=MNIST)
    tv.transforms = types.SimpleNamespace(ToTensor=lambda: None)
    sys.modules["torchvision"] = tv
    sys.path.insert(0, HERE)  # the package hyperspherical_vae
    with open(os.path.join(HERE, "examples", "mnist.py")) as f:
        source = f.read().split("# hidden dimension and dimension of latent space")[0]
    namespace = {"__name__": "s_vae_example"}
    exec(compile(source, "examples/mnist.py", "exec"), namespace)
    return namespace


def build(ns, dist, z):
    """As the example builds its two models: the vMF one on S^z (ambient z + 1)."""
    return ns["ModelVAE"](h_dim=H_DIM, z_dim=z if dist == "normal" else z + 1, distribution=dist)


def train(args):
    ns = example(args.train_size)
    os.makedirs(args.out, exist_ok=True)
    for z in args.z_dims:
        for dist in args.dists:
            torch.manual_seed(args.seed)
            np.random.seed(args.seed)
            model = build(ns, dist, z)
            optimizer = ns["optim"].Adam(model.parameters(), lr=1e-3)
            c0, t0, per_epoch = time.process_time(), time.perf_counter(), []
            for epoch in range(args.epochs):
                e0 = time.process_time()
                ns["train"](model, optimizer)
                per_epoch.append(time.process_time() - e0)
                print(json.dumps({"dist": dist, "z": z, "epoch": epoch + 1, "cpu_s": round(per_epoch[-1], 2)}),
                      flush=True)
            name = f"{dist}_z{z}"
            torch.save(model.state_dict(), os.path.join(args.out, name + ".pt"))
            with open(os.path.join(args.out, name + ".json"), "w") as f:
                json.dump({"dist": dist, "z": z, "epochs": args.epochs, "train_size": args.train_size,
                           "seed": args.seed, "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0,
                           "cpu_s_per_epoch": per_epoch}, f)


@torch.no_grad()
def per_image(model, x, num_samples):
    """Importance-sampled log p(x) and the ELBO of each row of x, the example's estimator."""
    z_mean, z_var = model.encode(x)
    q_z, p_z = model.reparameterize(z_mean, z_var)
    z = q_z.rsample(torch.Size([num_samples]))
    log_p_z, log_q = p_z.log_prob(z), q_z.log_prob(z)
    if model.distribution == "normal":
        log_p_z, log_q = log_p_z.sum(-1), log_q.sum(-1)
    logits = model.decode(z)
    log_px_z = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand(num_samples, *x.shape), reduction="none").sum(-1)
    w = log_px_z + log_p_z - log_q  # (K, B)
    return w.logsumexp(0) - np.log(num_samples), w.mean(0)


def score(args):
    from pyrovae.data.datasets import load_dataset

    ns = example(args.train_size)
    x_test = load_dataset("mnist", data_dir=os.environ.get("PYROVAE_DATA")).test["x"][: args.test_size]
    for z in args.z_dims:
        for dist in args.dists:
            name = f"{dist}_z{z}"
            model = build(ns, dist, z)
            model.load_state_dict(torch.load(os.path.join(args.out, name + ".pt")))
            model.eval()
            torch.manual_seed(args.seed)
            c0 = time.process_time()
            ll, elbo = (torch.cat(t) for t in zip(*(per_image(model, x, args.num_samples)
                                                    for x in x_test.split(args.chunk))))
            torch.save({"ll": ll, "elbo": elbo}, os.path.join(args.out, name + "_ll.pt"))
            print(json.dumps({"name": name, "test_ll": float(ll.mean()), "se": float(ll.std() / len(ll) ** 0.5),
                              "elbo": float(elbo.mean()), "K": args.num_samples, "n": len(ll),
                              "cpu_s": round(time.process_time() - c0, 1)}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "score"])
    p.add_argument("--z-dims", type=int, nargs="+", default=[2, 3, 5])
    p.add_argument("--dists", nargs="+", choices=["normal", "vmf"], default=["normal", "vmf"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-size", type=int, default=20000, help="the first N training images")
    p.add_argument("--num-samples", type=int, default=500, help="K for the test log-likelihood")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=20, help="test images per scoring pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    (train if args.command == "train" else score)(args)


if __name__ == "__main__":
    main()
