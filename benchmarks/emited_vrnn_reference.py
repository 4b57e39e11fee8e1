"""Run a public PyTorch VRNN, emited/VariationalRecurrentNeuralNetwork (``train.py`` and
``model.py``), unchanged on the local Bach chorales, and compare it with a ``pyrovae fit --model
vrnn`` run on the same test chorales: the VRNN reference of docs/sequences.md ("The VRNN against a
reference at equal budget").

Two parts, like benchmarks/pyro_dmm_example.py.

``run`` (any Python with torch, numpy and matplotlib; this repository's venv will do, the code
imports nothing of the suite). The reference trains on MNIST rows: ``train.py`` builds
``torchvision.datasets.MNIST`` loaders and feeds each batch, ``(B, 1, T, D)`` squeezed and
transposed, as ``(T, B, D)`` to its ``VRNN``, whose loss is the analytic KL plus the Bernoulli
NLL of every step (its ``_nll_bernoulli``: ``sigmoid`` means, ``EPS`` inside the logs). This script
replaces ``torchvision`` by a stub whose ``datasets.MNIST(train=True)`` is the suite's
``bach-chorales`` training split (``$PYROVAE_DATA/bach_chorales/bach_chorales.npz``: 213 chorales,
one row per beat, 88 keys), ``train=False`` the test split (68 chorales), each item a chorale as
``(1, T, 88)`` (the shape of an MNIST image, T rows of D columns), builds its ``VRNN`` with
``x_dim`` 88, the data's width (the script's constant says 28, an MNIST row's), and gives
``torch.utils.data.DataLoader`` a collate function that pads a batch's chorales with silent beats to
its own longest one: the reference's model has no mask, so those beats enter its loss, as they
would with any data of unequal lengths (its only way to batch them). The rest is its own code: its
hyper-parameters (h 100, z 16, one GRU layer, 25 epochs, batch 8, Adam 1e-3, ``clip`` applied
after the step), its seed 128 (``--seed`` replaces the value its ``torch.manual_seed`` call
receives), its loop and its per-epoch test pass. matplotlib runs on the Agg backend (the loop
draws a sample every 1000 batches). One torch thread.

After training, the script scores each test chorale alone (no padding) with the trained modules of
the reference's ``VRNN``: K draws of its filtering posterior ``q(z_t | x_t, h_{t-1})`` (``enc``),
the log-weights log p(x, z) - log q(z | x) summed over the chorale's beats (its prior net, its
Bernoulli likelihood written as its ``_nll_bernoulli`` computes it, per draw), giving the
chorale's importance-sampled log p(x) and its K-draw mean ELBO, saved (``--save``) with the
process CPU and wall time of the training. ``compare`` is pyro_dmm_example.py's: it scores a
``pyrovae fit`` run folder on the same test chorales with the same K and prints both per beat and
paired.

Setup, in a scratch folder outside this repository (commit ``0f23c87``):

    git --git-dir=REPO/.git show COMMIT:train.py > emited/train.py   # and model.py; mkdir emited/saves
    nice python benchmarks/emited_vrnn_reference.py run --code emited --num-samples 100 --save ref_vrnn.pt

Ours at its sizes, batch, learning rate, epochs and seed, and the comparison:

    pyrovae fit --model vrnn --data bach-chorales --z-dim 16 --rnn-dim 100 --feature-dim 100 --hidden-dims 100 \\
        --batch-size 8 --lr 1e-3 --epochs 25 --seed 128 --threads 1 --valid-every 0 --eval-samples 0 --out runs/vrnn-emited
    python benchmarks/pyro_dmm_example.py compare --reference ref_vrnn.pt --ours runs/vrnn-emited --num-samples 100
"""
import argparse, math, os, runpy, sys, time, types

import torch

from pyro_dmm_example import chorales  # benchmarks/: the npz's splits, as the DMM reference reads them

KEYS = 88  # a beat's width (MIDI 21-108)


def chorale_set(train):
    """The stub ``MNIST``: a list of ``((1, T, 88) float chorale, 0)``, train or test split."""
    seqs, _ = chorales()["train" if train else "test"]
    return [(torch.as_tensor(s, dtype=torch.float32).unsqueeze(0), 0) for s in seqs]


def pad_collate(items):
    """A batch ``(B, 1, T_max, 88)`` padded with silent beats, and its dummy labels."""
    longest = max(x.shape[1] for x, _ in items)
    out = torch.zeros(len(items), 1, longest, items[0][0].shape[-1])
    for i, (x, _) in enumerate(items):
        out[i, :, : x.shape[1]] = x
    return out, torch.zeros(len(items), dtype=torch.long)


def install_stubs(seed):
    """torchvision's ``datasets.MNIST`` -> chorales, the DataLoader's collate -> padding, the
    script's seed -> ``seed`` (None keeps its own)."""
    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(MNIST=lambda root, train=True, download=False, transform=None: chorale_set(train))
    tv.transforms = types.SimpleNamespace(ToTensor=lambda: None)
    sys.modules["torchvision"] = tv
    import matplotlib
    matplotlib.use("Agg")
    import torch.utils.data as tud

    class PaddingLoader(tud.DataLoader):
        def __init__(self, dataset, **kwargs):
            kwargs.setdefault("collate_fn", pad_collate)
            super().__init__(dataset, **kwargs)

    tud.DataLoader = PaddingLoader
    if seed is not None:
        manual_seed = torch.manual_seed
        torch.manual_seed = lambda _: manual_seed(seed)


@torch.no_grad()
def reference_scores(vrnn, num_samples, seed):
    """Per test chorale, the importance-sampled log p(x) and mean ELBO of the trained reference
    VRNN (its modules, its likelihood), K = ``num_samples`` draws of its posterior."""
    eps = torch.finfo(torch.float).eps  # the reference's EPS
    normal = torch.distributions.Normal
    torch.manual_seed(seed)
    vrnn.eval()
    ll, elbo = [], []
    for seq in chorales()["test"][0]:
        x = torch.as_tensor(seq, dtype=torch.float32)[:, None].expand(-1, num_samples, -1)  # (T, K, 88)
        h = x.new_zeros(vrnn.n_layers, num_samples, vrnn.h_dim)
        log_w = x.new_zeros(num_samples)
        for x_t in x:
            phi_x = vrnn.phi_x(x_t)
            enc = vrnn.enc(torch.cat([phi_x, h[-1]], 1))
            q = normal(vrnn.enc_mean(enc), vrnn.enc_std(enc))
            prior = vrnn.prior(h[-1])
            p = normal(vrnn.prior_mean(prior), vrnn.prior_std(prior))
            z = q.sample()
            phi_z = vrnn.phi_z(z)
            theta = vrnn.dec_mean(vrnn.dec(torch.cat([phi_z, h[-1]], 1)))
            log_px = (x_t * torch.log(theta + eps) + (1 - x_t) * torch.log(1 - theta - eps)).sum(-1)
            log_w += log_px + p.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
            _, h = vrnn.rnn(torch.cat([phi_x, phi_z], 1).unsqueeze(0), h)
        ll.append(float(torch.logsumexp(log_w.double(), 0) - math.log(num_samples)))
        elbo.append(float(log_w.double().mean()))
    return torch.tensor(ll, dtype=torch.float64), torch.tensor(elbo, dtype=torch.float64)


def run(argv):
    parser = argparse.ArgumentParser(prog="emited_vrnn_reference.py run")
    parser.add_argument("--code", required=True, help="the folder holding the reference's train.py and model.py")
    parser.add_argument("--seed", type=int, default=None, help="instead of the script's 128")
    parser.add_argument("--num-samples", type=int, default=100, help="K for the test chorales' log p(x)")
    parser.add_argument("--save", default=None, help="save the per-chorale scores and the times here")
    args = parser.parse_args(argv)
    save = os.path.abspath(args.save) if args.save else None

    torch.set_num_threads(1)
    install_stubs(args.seed)
    os.chdir(args.code)  # it saves to saves/ and imports model.py from here
    sys.path.insert(0, os.getcwd())
    import model as reference_model  # the script's `from model import VRNN` then finds this module

    build = reference_model.VRNN.__init__

    def with_data_width(self, x_dim, *rest, **options):  # 88 keys where the script says x_dim = 28
        build(self, KEYS, *rest, **options)

    reference_model.VRNN.__init__ = with_data_width
    sys.argv = ["train.py"]
    cpu0, wall0 = time.process_time(), time.time()
    namespace = runpy.run_path("train.py", run_name="__main__")
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    epochs = namespace["n_epochs"]
    seed = namespace["seed"] if args.seed is None else args.seed
    print(f"reference: {epochs} epochs, {cpu:.1f} s CPU ({cpu / epochs:.2f} s/epoch), {wall:.1f} s wall", flush=True)
    ll, elbo = reference_scores(namespace["model"], args.num_samples, seed)
    beats = float(sum(chorales()["test"][1]))
    print(f"reference test: log p(x) {float(ll.sum()) / beats:.4f}, ELBO {float(elbo.sum()) / beats:.4f} nats per beat "
          f"(K = {args.num_samples})")
    if save:
        settings = {k: namespace[k] for k in ("h_dim", "z_dim", "n_layers", "n_epochs", "clip",
                                              "learning_rate", "batch_size")}
        torch.save({"log_px": ll, "elbo": elbo, "K": args.num_samples, "epochs": epochs, "cpu_s": cpu, "wall_s": wall,
                    "seed": seed, "example_args": dict(settings, x_dim=KEYS)}, save)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        sys.exit(__doc__)
    run(sys.argv[2:])
