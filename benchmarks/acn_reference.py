"""Run an unofficial PyTorch ACN with a PixelCNN decoder (johannah/ACN at 671eab2,
``train_mnist_pcnn_acn.py``, ``acn_models.py``, ``pixel_cnn.py`` and ``utils.py`` unchanged) on
local MNIST at the budget of benchmarks/acn_mnist.py, and score it on the same test images with
the same per-image coding cost: the reference of docs/sets.md ("ACN against a reference
implementation").

Three parts.

``train`` (the reference's venv: torch, numpy, scikit-learn, matplotlib, IPython). The script
reads MNIST through ``torchvision.datasets.MNIST`` (which downloads), ``transforms.Compose`` and
``ToTensor``, and writes example pictures with ``torchvision.utils.save_image``; there is no CPU
torchvision wheel for this torch, so this script puts a small ``torchvision`` module in its place
(:func:`torchvision_stub`): ``datasets.MNIST(train=True)`` is the first ``--train-size`` images of
the local IDX training file (the suite's first training rows: its validation split is the file's
last 10,000), each drawn again as a binary image every time it is read (dynamic binarization,
as the suite trains; the script's BCE on a 0/1 image is then the Bernoulli likelihood);
``datasets.MNIST(train=False)`` is the suite's first ``--test-size`` binarized test images
(:func:`test_images`); ``ToTensor`` gives the (1, 28, 28) image; ``Compose`` chains; ``save_image``
writes nothing (pictures only). Four shims of the environment, none in the model or the loop:
NumPy's ``np.int`` (removed in NumPy 1.24, used by the script's prior in eval mode) is set to
``int``; argparse options the script declares without ``type=`` but with an int default
(``--num_pcnn_layers``, ``--encoder_output_size``, ``--num_threads``, ...) are parsed as ints
(given on the command line they would arrive as strings and fail in ``range``/``nn.Linear``);
scikit-learn's ``n_jobs=-1`` neighbour search is held to one CPU (``LOKY_MAX_CPU_COUNT=1``);
``nn.Conv2d`` convolves ``input.contiguous()`` (:func:`conv_saves_a_contiguous_copy`: the
script's in-place add on a cropped view fails in backward under torch >= 1.11; under torch
1.10.2 the unchanged script trains without this shim). And one of its seeding: its
``utils.seed_everything`` calls ``torch.manual_seed(394)`` whatever seed it is given, so the
script's ``--seed`` does nothing; here it seeds torch with that seed
(:func:`seed_everything_seeds_its_seed`; the same run at the default 394). Then
it runs the script as ``__main__`` with the remaining arguments (its networks, its KNN prior refit
on every batch, Adam, its loss: KL with the encoder's second output read as a log standard
deviation, plus BCE of the PixelCNN's sigmoid) and records the process CPU time.

``score`` (the reference's venv). Loads the script's last checkpoint and rebuilds its networks
(the script's own classes, the constructor arguments the script passes). The checkpoint does not
hold the prior's table of training codes (a NumPy attribute, not in the ``state_dict``; a
reloaded model starts from random codes), so the table is rebuilt: the encoder's means (eval
mode) of the ``--train-size`` training images, binarized once (seed 0). Per test image, in nats:
q(z | x) = N(mu, exp(logvar / 2)^2), the Normal the script draws z from; the reconstruction
cost -E_q log p(x | z) (``--kl-samples`` draws, the PixelCNN's Bernoulli logits given the image);
the KL to the prior as benchmarks/acn_mnist.py takes ours, the uniform mixture over the K nearest
training codes of p(z | code) = N(mu_p, exp(logstd_p)^2), by Monte Carlo with the same draws;
the KL to the script's own eval prior (its nearest code only; closed form); the KL as the
script's loss computes it (the second output read as log std); the reconstruction cost with
another test image's code (the suite's derangement); the encoder means (active units, 5-NN
class vote against the training codes); and a causality check of the PixelCNN (the gradient of
a pixel's logit with respect to itself and later pixels). All to ``--out`` (JSON).

``pair`` (either venv): the per-image coding costs of ours (``acn_mnist.py --per-image``) and of
the reference on the same images, paired: mean difference ± standard error.

(matplotlib below 3.9: the script calls ``matplotlib.cm.get_cmap``.) 5 epochs as run for
docs/sets.md (``--num_examples_to_train`` is epochs x 10,000; ``-se`` the epochs between
checkpoints). Setup, in a scratch folder outside this repository:

    git --git-dir=ACN.git archive 671eab2 | tar -x -C acn && cd acn
    python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0
    pip install ipython scikit-learn 'matplotlib<3.9'
    OMP_NUM_THREADS=1 nice python PATH/TO/benchmarks/acn_reference.py train --ref . --train-size 10000 -- \\
        -d MNIST --rec_loss_type bce -cl 16 -k 5 --pixel_cnn_dim 16 --num_pcnn_layers 3 \\
        --encoder_output_size 512 -bs 64 -lr 1e-3 --num_threads 1 --num_examples_to_train 50000 -se 5 \\
        --model_savedir runs -e acn
    OMP_NUM_THREADS=1 nice python PATH/TO/benchmarks/acn_reference.py score --ref . runs/acn_MNIST_bce_16_rsum \\
        --out ref_scores.json
    python benchmarks/acn_mnist.py --epochs 5 --per-image ours.json --figure /tmp/d.png    # this repository
    python benchmarks/acn_reference.py pair ours.json ref_scores.json
"""
import argparse
import contextlib
import glob
import gzip
import json
import math
import os
import runpy
import sys
import time
import types

import numpy as np
import torch

DATA = os.environ.get("PYROVAE_DATA", ".")
BINARIZE_SEED = 0  # the suite's (pyrovae/data/datasets.py)


def _idx(name):
    with gzip.open(os.path.join(DATA, "mnist", name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def grey(part, n=None):
    """The first ``n`` images of the IDX ``part`` ("train" or "t10k") as (n, 28, 28) floats in
    [0, 1], and their labels."""
    images, labels = _idx(part + "-images-idx3-ubyte.gz"), _idx(part + "-labels-idx1-ubyte.gz")
    return (torch.from_numpy(images[:n].astype(np.float32)).div_(255.0),
            torch.from_numpy(labels[:n].astype(np.int64)))


def test_images(n):
    """The suite's binarized test images, its first ``n``: all 10,000 drawn once with seed 0, as
    ``load_dataset("mnist").test`` draws them; (n, 28, 28) and the labels."""
    x, y = grey("t10k")
    x = torch.bernoulli(x, generator=torch.Generator().manual_seed(BINARIZE_SEED))
    return x[:n], y[:n]


def train_images_once(n):
    """The first ``n`` training images binarized once (seed 0), for the table of codes."""
    x, y = grey("train", n)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(BINARIZE_SEED)), y


def torchvision_stub(train_size, test_size):
    """A ``torchvision`` module with the names the reference uses, reading local files."""

    class MNIST(torch.utils.data.Dataset):
        def __init__(self, root=None, train=True, download=False, transform=None):
            self.train, self.transform = train, transform
            self.data, self.targets = grey("train", train_size) if train else test_images(test_size)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            image = self.data[i]
            if self.train:  # dynamic binarization: a new draw each time the image is read
                image = torch.bernoulli(image)
            return (self.transform(image) if self.transform else image), int(self.targets[i])

    class Compose:
        def __init__(self, functions):
            self.functions = functions

        def __call__(self, x):
            for f in self.functions:
                x = f(x)
            return x

    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = types.ModuleType("torchvision.datasets")
    torchvision.transforms = types.ModuleType("torchvision.transforms")
    torchvision.utils = types.ModuleType("torchvision.utils")
    torchvision.datasets.MNIST = MNIST
    torchvision.transforms.Compose = Compose
    torchvision.transforms.ToTensor = lambda: (lambda image: image.reshape(1, *image.shape[-2:]).float())
    torchvision.utils.save_image = lambda *args, **kwargs: None
    for name in ("", ".datasets", ".transforms", ".utils"):
        sys.modules["torchvision" + name] = getattr(torchvision, name[1:]) if name else torchvision
    return torchvision


@contextlib.contextmanager
def int_defaults_parse_as_int():
    """Within: an argparse option declared without ``type=`` whose default is an int parses as int."""
    add = argparse._ActionsContainer.add_argument

    def add_argument(self, *args, **kwargs):
        if "type" not in kwargs and type(kwargs.get("default")) is int and kwargs.get("action") is None:
            kwargs["type"] = int
        return add(self, *args, **kwargs)

    argparse._ActionsContainer.add_argument = add_argument
    try:
        yield
    finally:
        argparse._ActionsContainer.add_argument = add


@contextlib.contextmanager
def conv_saves_a_contiguous_copy():
    """Within: ``nn.Conv2d`` convolves (and so saves for its backward) ``input.contiguous()``, as
    torch 1.0-1.10 did inside ``_convolution``; the same numbers. Since torch 1.11 a convolution
    saves its input as given, and the script's in-place ``input_to_out_v += ...`` on the cropped
    vertical-stack output (a view, also the input of ``vert_to_horiz``) then fails in backward
    ("one of the variables needed for gradient computation has been modified by an inplace
    operation")."""
    forward = torch.nn.Conv2d._conv_forward
    torch.nn.Conv2d._conv_forward = lambda self, input, weight, bias: forward(self, input.contiguous(), weight, bias)
    try:
        yield
    finally:
        torch.nn.Conv2d._conv_forward = forward


@contextlib.contextmanager
def seed_everything_seeds_its_seed():
    """Within: the reference's ``utils.seed_everything(seed, max_threads)`` seeds torch with
    ``seed`` (the script's ``--seed``, default 394) instead of its constant 394, which it uses
    whatever the argument. The same numbers at the default seed; ``--seed N`` then gives another
    run (its prior's neighbour choice keeps its own NumPy stream, seed 4543 in its constructor).
    Needs the reference's folder on ``sys.path`` (``_environment``)."""
    import utils

    seed_everything = utils.seed_everything

    def seeded(seed=394, max_threads=2):
        torch.manual_seed(int(seed))
        torch.set_num_threads(max_threads)

    utils.seed_everything = seeded
    try:
        yield
    finally:
        utils.seed_everything = seed_everything


def _environment(ref):
    os.environ.setdefault("LOKY_MAX_CPU_COUNT", "1")
    if not hasattr(np, "int"):
        np.int = int  # the alias of the script's NumPy (removed in 1.24)
    sys.path.insert(0, os.path.abspath(ref))


def train(args, rest):
    _environment(args.ref)
    torchvision_stub(args.train_size, args.test_size)
    sys.argv = [os.path.join(os.path.abspath(args.ref), "train_mnist_pcnn_acn.py")] + rest
    cpu0, wall0 = time.process_time(), time.time()
    with int_defaults_parse_as_int(), conv_saves_a_contiguous_copy(), seed_everything_seeds_its_seed():
        namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    info = namespace["info"]
    record = {"cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "train_size": args.train_size,
              "test_size": args.test_size, "reference_args": rest, "epochs": info["epoch_cnt"],
              "train_losses": info["train_losses"], "valid_losses": info["valid_losses"]}
    with open(os.path.join(info["base_filepath"], "cpu_time.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"reference: {info['epoch_cnt']} epochs, {cpu:.1f} s CPU, {wall:.1f} s wall", flush=True)


# ------------------------------------------------------------------ scoring (pure parts first)


def normal_kl(mu_q, std_q, mu_p, std_p):
    """KL(N(mu_q, std_q^2) || N(mu_p, std_p^2)) summed over the last dimension."""
    return (torch.log(std_p / std_q) + (std_q ** 2 + (mu_q - mu_p) ** 2) / (2 * std_p ** 2) - 0.5).sum(-1)


def normal_log_prob(z, mu, std):
    return (-0.5 * ((z - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def mixture_kl(z, mu_q, std_q, mu_p, std_p):
    """Monte Carlo KL(q || (1/K) sum_k N(mu_p[k], std_p[k]^2)) from draws ``z`` (S, B, D) of q;
    ``mu_q``/``std_q`` (B, D), ``mu_p``/``std_p`` (B, K, D); (B,)."""
    log_q = normal_log_prob(z, mu_q, std_q)  # (S, B)
    log_p = normal_log_prob(z[:, :, None], mu_p[None], std_p[None])  # (S, B, K)
    log_p = torch.logsumexp(log_p, -1) - math.log(mu_p.shape[1])
    return (log_q - log_p).mean(0)


def knn_rows(queries, table, k):
    """(N, k): the rows of ``table`` nearest to each query (Euclidean), nearest first."""
    return torch.cdist(queries, table).topk(k, dim=1, largest=False).indices


def mean_se(values):
    v = np.asarray(values, dtype=float)
    return [round(float(v.mean()), 3), round(float(v.std(ddof=1) / math.sqrt(len(v))), 3)]


def paired(ours, ref):
    """Per-image differences ours - ref: mean ± s.e."""
    a, b = np.asarray(ours, dtype=float), np.asarray(ref, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"unpaired: {a.shape} against {b.shape} images")
    return mean_se(a - b)


def _bce_nll(logits, x):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def causality_gap(decoder, z, pixels=((0, 0), (5, 9), (14, 14), (27, 27))):
    """max |d logit(p) / d x(q)| over q at or after p in raster order (0 for a causal decoder)."""
    worst = 0.0
    for (i, j) in pixels:
        x = torch.rand(1, 1, 28, 28, requires_grad=True)
        decoder(x=x, float_condition=z[:1])[0, 0, i, j].backward()
        later = x.grad[0, 0].flatten()[i * 28 + j:]
        worst = max(worst, float(later.abs().max()))
    return worst


def score(args):
    _environment(args.ref)
    torchvision_stub(1, 1)
    from acn_models import ConvEncoder, PriorNetwork
    from pixel_cnn import GatedPixelCNN

    path = args.checkpoint
    if os.path.isdir(path):
        path = sorted(glob.glob(os.path.join(path, "*.pt")))[-1]
    state = torch.load(path, map_location="cpu", weights_only=False)
    info = state["info"]
    encoder = ConvEncoder(info["code_length"], input_size=info["input_channels"],
                          encoder_output_size=info["encoder_output_size"])
    prior = PriorNetwork(size_training_set=info["size_training_set"], code_length=info["code_length"],
                         k=info["num_k"])
    decoder = GatedPixelCNN(input_dim=info["num_input_chans"], output_dim=info["output_dim"],
                            dim=info["pixel_cnn_dim"], n_layers=info["num_pcnn_layers"],
                            float_condition_size=info["code_length"], last_layer_bias=info["last_layer_bias"],
                            use_batch_norm=info["use_batch_norm"],
                            output_projection_size=info["output_projection_size"])
    for name, net in (("encoder_model", encoder), ("prior_model", prior), ("pcnn_decoder", decoder)):
        net.load_state_dict(state[name + "_state_dict"])
        net.eval()
    k = info["num_k"]
    torch.manual_seed(args.seed)
    with torch.no_grad():
        train_x, train_y = train_images_once(info["size_training_set"])
        table = torch.cat([encoder.encode(train_x[i:i + 500, None])[0] for i in range(0, len(train_x), 500)])
        x_all, y_all = test_images(args.test_size)
        other = torch.roll(torch.arange(len(x_all)), 1)
        out = {key: [] for key in ("kl_mixture", "kl_nearest", "kl_as_its_loss", "reconstruction", "swapped")}
        means = []
        for i in range(0, len(x_all), args.batch):
            xb = x_all[i:i + args.batch, None]
            ob = x_all[other[i:i + args.batch], None]
            mu, logvar = encoder.encode(xb)
            std = torch.exp(0.5 * logvar)
            mu_o, logvar_o = encoder.encode(ob)
            rows = knn_rows(mu, table, k)  # (B, K)
            mu_p, logstd_p = prior.encode(table[rows])  # (B, K, D)
            z = mu + std * torch.randn(args.kl_samples, *mu.shape)
            z_o = mu_o + torch.exp(0.5 * logvar_o) * torch.randn(args.kl_samples, *mu.shape)
            out["kl_mixture"].append(mixture_kl(z, mu, std, mu_p, logstd_p.exp()))
            out["kl_nearest"].append(normal_kl(mu, std, mu_p[:, 0], logstd_p[:, 0].exp()))
            out["kl_as_its_loss"].append(normal_kl(mu, logvar.exp(), mu_p[:, 0], logstd_p[:, 0].exp()))
            out["reconstruction"].append(torch.stack([_bce_nll(decoder(x=xb, float_condition=z[s]), xb)
                                                      for s in range(args.kl_samples)]).mean(0))
            out["swapped"].append(torch.stack([_bce_nll(decoder(x=xb, float_condition=z_o[s]), xb)
                                               for s in range(args.kl_samples)]).mean(0))
            means.append(mu)
        per = {key: torch.cat(v).tolist() for key, v in out.items()}
        means = torch.cat(means)
        votes = torch.nn.functional.one_hot(train_y[knn_rows(means, table, 5)], 10).sum(1)
        accuracy = float((votes.argmax(1) == y_all).float().mean())
    with conv_saves_a_contiguous_copy():  # its backward, as in training
        gap = causality_gap(decoder, means)
    rec = np.asarray(per["reconstruction"])
    summary = {
        "checkpoint": path, "epochs": info["epoch_cnt"], "test_images": len(x_all), "kl_samples": args.kl_samples,
        "coding_cost": mean_se(np.asarray(per["kl_mixture"]) + rec),
        "coding_cost_nearest_prior": mean_se(np.asarray(per["kl_nearest"]) + rec),
        "kl_mixture": mean_se(per["kl_mixture"]), "kl_nearest": mean_se(per["kl_nearest"]),
        "kl_as_its_loss": mean_se(per["kl_as_its_loss"]), "reconstruction": mean_se(rec),
        "decoder_reliance_on_z": mean_se(np.asarray(per["swapped"]) - rec),
        "active_units": int((means.var(0) > 0.01).sum()), "knn5_test_accuracy_from_codes": accuracy,
        "causality_gap": gap,
        "num_parameters": sum(p.numel() for net in (encoder, prior, decoder) for p in net.parameters()),
    }
    print(json.dumps(summary), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "per_image": per}, f)


def pair(args):
    with open(args.ours) as f:
        ours = json.load(f)
    with open(args.reference) as f:
        ref = json.load(f)["per_image"]
    a = np.asarray(ours["acn"]["kl"]) + np.asarray(ours["acn"]["reconstruction"])
    out = {"ours_acn": mean_se(a),
           "reference": mean_se(np.asarray(ref["kl_mixture"]) + np.asarray(ref["reconstruction"])),
           "ours_minus_reference": paired(a, np.asarray(ref["kl_mixture"]) + np.asarray(ref["reconstruction"])),
           "ours_minus_reference_nearest_prior": paired(
               a, np.asarray(ref["kl_nearest"]) + np.asarray(ref["reconstruction"])),
           "ours_minus_reference_reconstruction": paired(ours["acn"]["reconstruction"], ref["reconstruction"]),
           "ours_minus_reference_kl": paired(ours["acn"]["kl"], ref["kl_mixture"])}
    if "vae" in ours:
        v = np.asarray(ours["vae"]["kl"]) + np.asarray(ours["vae"]["reconstruction"])
        out["ours_vae_minus_reference"] = paired(v, np.asarray(ref["kl_mixture"]) + np.asarray(ref["reconstruction"]))
    print(json.dumps(out, indent=1))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run train_mnist_pcnn_acn.py; its arguments after --")
    t.add_argument("--train-size", type=int, default=10000)
    s = sub.add_parser("score", help="score the script's last checkpoint (a .pt or its folder)")
    s.add_argument("checkpoint")
    s.add_argument("--kl-samples", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=int, default=100)
    s.add_argument("--out", default=None)
    for q in (t, s):
        q.add_argument("--ref", default=".", help="the reference's folder (train_mnist_pcnn_acn.py and its modules)")
        q.add_argument("--test-size", type=int, default=1000)
        q.add_argument("--threads", type=int, default=1)
    a = sub.add_parser("pair", help="pair ours (acn_mnist.py --per-image) with the reference's scores")
    a.add_argument("ours")
    a.add_argument("reference")
    args = p.parse_args(argv)
    if args.command == "pair":
        return pair(args)
    torch.set_num_threads(args.threads)
    return train(args, rest) if args.command == "train" else score(args)


if __name__ == "__main__":
    main()
