"""Run Isaac-Hirsch/PixelVAEPytorch (a PyTorch port of Gulrajani et al.'s PixelVAE MNIST model) on
statically binarized MNIST at the CPU budget of benchmarks/pixelcnn_collapse.py: the reference of
docs/autoregressive.md ("PixelVAE at equal budget").

``train`` runs the repository's ``mnist_pixelvae_train.py`` unchanged as ``__main__`` (its model,
loss with KL warm-up, Adam 1e-3 and loop), with one substitution: its ``load_mnist_dataset``
(which downloads the IDX files) returns the first ``--train-size`` rows of Larochelle's statically
binarized MNIST (``$PYROVAE_DATA/binarized_mnist/binarized_mnist.npz``) as (N, 1, 28, 28) floats;
the script's ``torch.bernoulli`` of a 0/1 image is the image itself. The script does not seed
torch; this one calls ``torch.manual_seed(--seed)`` first. Arguments after ``--`` go to the script.

``score`` loads the script's final checkpoint and, on the same test images as
benchmarks/pixelcnn_collapse.py (a fixed random subset of the test split, seed 0), writes per
image the importance-sampled -log p(x) (K = ``--num-samples`` draws of the model's own encoder
q(z | x) = N(mu, exp(log_sigma)^2), log p(x | z) the model's Bernoulli logits), the one-sample
-ELBO and the KL of q(z | x) to N(0, I) (the model's ``kl_unit_gaussian``), and the active units
(Burda et al.: Var_x E_q[z_j] > 0.01) to ``--out`` (JSON).

Setup, in a scratch folder outside this repository (the repository is a package named
PixelVAEPytorch):

    mkdir PixelVAEPytorch && git --git-dir=PixelVAEPytorch.git archive 401d3aa | tar -x -C PixelVAEPytorch
    cp PATH/TO/benchmarks/pixelvae_reference.py run_ref.py
    OMP_NUM_THREADS=1 python run_ref.py train --train-size 10000 -- -L 0 -fs 3 -algo upsample_z_conv \
        -dpx 16 -ldim 16 --steps 1000 --batch-size 100 --device cpu --no-download -o local_spatial
    OMP_NUM_THREADS=1 python run_ref.py score local_spatial --test-size 100 --num-samples 1000 --out local_spatial.json
"""
import argparse
import json
import math
import os
import runpy
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
NPZ = os.path.join(os.environ.get("PYROVAE_DATA", "."), "binarized_mnist", "binarized_mnist.npz")


def _rows(split, n=None):
    with np.load(NPZ) as npz:
        rows = npz[split]
    return torch.from_numpy(rows[:n].astype(np.float32)).view(-1, 1, 28, 28)


def train(args, rest):
    import PixelVAEPytorch.mnist_data as mnist_data

    images = _rows("train", args.train_size)
    mnist_data.load_mnist_dataset = lambda root, train=True, download=True: \
        mnist_data.MNISTTensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    torch.manual_seed(args.seed)
    sys.argv = [os.path.join(HERE, "PixelVAEPytorch", "mnist_pixelvae_train.py")] + rest
    cpu = time.process_time()
    runpy.run_path(sys.argv[0], run_name="__main__")
    print(f"train CPU seconds: {time.process_time() - cpu:.0f}", flush=True)


@torch.no_grad()
def score(args):
    from PixelVAEPytorch import MNISTPixelVAE
    from PixelVAEPytorch.losses import kl_unit_gaussian

    checkpoint = torch.load(os.path.join(args.run, "checkpoint_final.pt"), map_location="cpu")
    a = checkpoint["args"]
    model = MNISTPixelVAE(num_pixel_cnn_layer=a["num_pixel_cnn_layer"], decoder_algorithm=a["decoder_algorithm"],
                          dim_pix=a["dim_pix"], filter_size=a["filter_size"], latent_dim=a["latent_dim"])
    model.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    test = _rows("test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    x_all = test[order[: args.test_size]]
    torch.manual_seed(args.seed)
    nll, neg_elbo, kl, means = [], [], [], []
    for x in x_all:
        mu, log_sigma = model.encoder(x[None])  # (1, z)
        z = mu + torch.randn(args.num_samples, mu.shape[1]) * log_sigma.exp()  # (K, z)
        logits = model.decoder(z, x[None].expand(args.num_samples, -1, -1, -1))
        log_px_z = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x[None].expand_as(logits), reduction="none").sum((1, 2, 3))
        log_pz = torch.distributions.Normal(0., 1.).log_prob(z).sum(1)
        log_qz = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z).sum(1)
        log_w = log_px_z + log_pz - log_qz
        nll.append(-(torch.logsumexp(log_w, 0) - math.log(args.num_samples)).item())
        k = kl_unit_gaussian(mu, log_sigma).sum().item()
        kl.append(k)
        neg_elbo.append(-log_px_z[0].item() + k)
        means.append(mu[0])
    active = int((torch.stack(means).var(0) > 0.01).sum())
    nll = np.asarray(nll)
    out = {"args": vars(args), "train_args": a, "nll": nll.tolist(), "test_nll": nll.mean(),
           "test_nll_se": nll.std(ddof=1) / math.sqrt(len(nll)), "neg_elbo": float(np.mean(neg_elbo)),
           "kl": float(np.mean(kl)), "active_units": active,
           "num_parameters": sum(p.numel() for p in model.parameters())}
    print(json.dumps({k: v for k, v in out.items() if k != "nll"}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


def main():
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--train-size", type=int, default=10000)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("run")
    s.add_argument("--test-size", type=int, default=100)
    s.add_argument("--num-samples", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None)
    for q in (t, s):
        q.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args, rest) if args.command == "train" else score(args)


if __name__ == "__main__":
    main()
