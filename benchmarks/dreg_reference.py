"""Run a public PyTorch implementation of DReG (iffsid/DReG-PyTorch, ``main.py`` and
``model.py`` unchanged) on local data, and compare the networks it trains, with the plain IWAE
gradient and with DReG, against ``pyrovae.fit`` at the same architecture and budget, on the same
test images: the reference of docs/objectives.md ("against a reference implementation").

Two parts, two Pythons.

``run`` (the reference's venv: torch and matplotlib). The reference reads MNIST through
``torchvision.datasets.MNIST`` (which downloads) and writes reconstructions and samples with
``torchvision.utils.save_image``. This script puts a small ``torchvision`` module in its place:
``datasets.MNIST`` yields the first ``--train-size`` images of the local IDX training file (which
are inside the suite's training split: its validation split is the file's last 10,000) or the
10,000 test images, as ``(1, 28, 28)`` grey levels in [0, 1] and the label, exactly what
``ToTensor()`` gives; ``transforms.ToTensor`` is then the identity; ``utils.save_image`` writes
nothing (pictures only, no part of training). Its test loss scores grey test pixels under a
Bernoulli, which torch has refused since 1.8 (``validate_args`` on by default); the script sets
the default of the reference's time (2019: off). It sets one torch thread, runs ``main.py`` as
``__main__`` with the remaining arguments (its own seed, networks, ``torch.nn.Linear`` init,
Adam, batch 128 with shuffling, dynamic binarization, the IWAE or DReG loss, the loop), and saves
the trained network (``--save``) with the process CPU time and wall time. The reference's own test
loss (a K-draw bound on grey test pixels) is printed as it runs but not used.

``compare`` (this repository's venv): trains ours with ``pyrovae.fit`` at the reference's
architecture (784-400-400-20, ReLU; Bernoulli pixels; diagonal Normal guide), batch, learning rate,
K, number of epochs, data (the same first ``--train-size`` images, dynamically binarized) and seed,
once per gradient of ``--gradients``, with the suite's defaults otherwise (``--init``: Burda et
al.'s init by default); loads each reference network as a Pyro pair (the reference's architecture
restated: ReLU hidden layers, the guide's scale ``exp(.)``); and scores every pair with the same
estimator (``pyrovae.evaluation.log_likelihood.iter_log_weights``) on the same ``--num-test``
binarized test images of the suite: the importance-sampled log p(x) with ``--num-samples`` draws,
per image, paired.

Setup, in a scratch folder outside this repository:

    python -m venv .venv && . .venv/bin/activate && pip install torch matplotlib
    git --git-dir=DREG/.git show 8f2c059:main.py > main.py        # and model.py, utils.py
    cp PATH/TO/benchmarks/dreg_reference.py run_ref.py
    nice python run_ref.py run --train-size 10000 --save ref-k5-plain.pt -- \\
        --epochs 15 --train-k 5 --seed 0 --log-interval 1000
    nice python run_ref.py run --train-size 10000 --save ref-k5-dreg.pt -- \\
        --epochs 15 --train-k 5 --seed 0 --log-interval 1000 --dreg

Ours and the comparison, in this repository:

    python benchmarks/dreg_reference.py compare --reference plain=ref-k5-plain.pt dreg=ref-k5-dreg.pt \\
        --num-samples 1000 --num-test 1000 --json dreg_reference.json
"""
import argparse, gzip, json, os, runpy, sys, time, types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("PYROVAE_DATA", ".")


def _idx(name):
    with gzip.open(os.path.join(DATA, "mnist", name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _torchvision_stub(train_size):
    """A ``torchvision`` module with the three names the reference uses, reading local files."""

    class MNIST(torch.utils.data.Dataset):
        def __init__(self, root=None, train=True, download=False, transform=None):
            part = "train" if train else "t10k"
            images = _idx(part + "-images-idx3-ubyte.gz")
            labels = _idx(part + "-labels-idx1-ubyte.gz")
            if train:
                images, labels = images[:train_size], labels[:train_size]
            self.data = torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1)  # (N, 1, 28, 28)
            self.targets = torch.from_numpy(labels.astype(np.int64))

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            return self.data[i], int(self.targets[i])

    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = types.ModuleType("torchvision.datasets")
    torchvision.transforms = types.ModuleType("torchvision.transforms")
    torchvision.utils = types.ModuleType("torchvision.utils")
    torchvision.datasets.MNIST = MNIST
    torchvision.transforms.ToTensor = lambda: (lambda image: image)
    torchvision.utils.save_image = lambda *args, **kwargs: None
    for name in ("", ".datasets", ".transforms", ".utils"):
        sys.modules["torchvision" + name] = getattr(torchvision, name[1:]) if name else torchvision
    return torchvision


def run(argv):
    parser = argparse.ArgumentParser(prog="run_ref.py run")
    parser.add_argument("--train-size", type=int, default=None, help="the first N training images (default all)")
    parser.add_argument("--save", required=True, help="save the trained network and the times here")
    parser.add_argument("reference_args", nargs=argparse.REMAINDER, help="-- then main.py's arguments")
    args = parser.parse_args(argv)
    reference_args = [a for a in args.reference_args if a != "--"]

    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)  # the default of its torch (2019)
    sys.path.insert(0, HERE)
    _torchvision_stub(args.train_size)
    sys.argv = [os.path.join(HERE, "main.py")] + reference_args + ["--no-cuda"]
    cpu0, wall0 = time.process_time(), time.time()
    namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    ref_args = namespace["args"]
    print(f"reference: {ref_args.epochs} epochs, {cpu:.1f} s CPU ({cpu / ref_args.epochs:.2f} s/epoch), "
          f"{wall:.1f} s wall")
    torch.save({"state_dict": namespace["model"].state_dict(), "args": vars(ref_args), "cpu_s": cpu,
                "wall_s": wall, "train_size": args.train_size, "reference_args": reference_args}, args.save)


# ------------------------------------------------------------------ compare (this repository's venv)


def reference_pair(state):
    """The saved network as a Pyro model and guide over the site ``z`` (the reference's
    architecture: ReLU hidden layers, the guide's scale exp(.), Bernoulli logits)."""
    import pyro
    import pyro.distributions as dist
    import torch.nn.functional as F

    def linear(name, h):
        return F.linear(h, state[name + ".weight"], state[name + ".bias"])

    z_dim = state["fc31.bias"].shape[0]

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            logits = linear("fc6", F.relu(linear("fc5", F.relu(linear("fc4", z)))))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            h = F.relu(linear("fc2", F.relu(linear("fc1", x))))
            pyro.sample("z", dist.Normal(linear("fc31", h), linear("fc32", h).exp()).to_event(1))

    return model, guide


def score(model, guide, x, num_samples, seed):
    """The K-draw importance-sampled log p(x) of every row of ``x``."""
    import pyro
    from pyrovae.evaluation.log_likelihood import iter_log_weights
    from pyrovae.infer.importance import log_mean_exp

    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return torch.cat([log_mean_exp(w, 0) for w in iter_log_weights(model, guide, {"x": x}, num_samples, 50)]
                         ).double()


def compare(argv):
    parser = argparse.ArgumentParser(prog="dreg_reference.py compare")
    parser.add_argument("--reference", nargs="+", required=True,
                        help="GRADIENT=FILE for each network run --save wrote (plain=..., dreg=...)")
    parser.add_argument("--init", default=None, help="ours: the init (default: the suite's)")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=1000, help="the first N binarized test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import dataclasses
    import pyro
    import pyrovae
    from pyrovae.data.datasets import load_dataset
    from pyrovae.evaluation.compare import paired_difference
    from pyrovae.guides import DiagNormalGuide
    from pyrovae.infer.importance import mean_and_stderr
    from pyrovae.infer.objectives import IWAE
    from pyrovae.models import VAE

    saved = {}
    for item in args.reference:
        gradient, _, path = item.partition("=")
        saved[gradient] = torch.load(path, map_location="cpu")
    first = next(iter(saved.values()))
    budget = {key: first["args"][key] for key in ("epochs", "batch_size", "learning_rate", "train_k", "seed",
                                                  "latent_dim")}
    for gradient, s in saved.items():
        if {key: s["args"][key] for key in budget} != budget or s["args"]["dreg"] != (gradient == "dreg"):
            parser.error(f"{gradient}: the reference runs differ in budget or gradient: {s['args']}")
    dataset = load_dataset("mnist")
    dataset = dataclasses.replace(dataset, train={k: v[: first["train_size"]] for k, v in dataset.train.items()},
                                  valid={k: v[:1000] for k, v in dataset.valid.items()})  # monitored only
    x = dataset.test["x"][: args.num_test]
    hidden = (400, 400)
    out = {"budget": {**budget, "train_size": first["train_size"]}, "test_images": len(x), "K": args.num_samples,
           "reference": {}, "ours": {}, "ours_minus_reference": {}, "dreg_minus_plain": {}}
    ll = {}
    for gradient, s in saved.items():
        ll["reference", gradient] = score(*reference_pair(s["state_dict"]), x, args.num_samples, args.seed)
        out["reference"][gradient] = {"log_px": mean_and_stderr(ll["reference", gradient]), "cpu_s": s["cpu_s"],
                                      "cpu_s_per_epoch": s["cpu_s"] / budget["epochs"],
                                      "args": s["reference_args"]}
        print("reference", gradient, out["reference"][gradient], flush=True)
    for gradient in saved:
        torch.manual_seed(budget["seed"])
        model = VAE(784, budget["latent_dim"], hidden, activation="relu")
        guide = DiagNormalGuide(784, budget["latent_dim"], hidden, activation="relu")
        pyro.clear_param_store()
        cpu0 = time.process_time()
        kwargs = {} if args.init is None else {"init": args.init}
        pyrovae.fit(model, guide, dataset, objective=IWAE(num_particles=budget["train_k"], gradient=gradient),
                    epochs=budget["epochs"], batch_size=budget["batch_size"], lr=budget["learning_rate"],
                    seed=budget["seed"], progress=False, **kwargs)
        cpu = time.process_time() - cpu0
        ll["ours", gradient] = score(model, guide, x, args.num_samples, args.seed)
        out["ours"][gradient] = {"log_px": mean_and_stderr(ll["ours", gradient]), "cpu_s": cpu,
                                 "cpu_s_per_epoch": cpu / budget["epochs"], "init": args.init or "default"}
        d = paired_difference(ll["ours", gradient], ll["reference", gradient])
        out["ours_minus_reference"][gradient] = {"mean": d.mean, "stderr": d.stderr}
        print("ours", gradient, out["ours"][gradient], "ours - reference", out["ours_minus_reference"][gradient],
              flush=True)
    if "plain" in saved and "dreg" in saved:
        for who in ("reference", "ours"):
            d = paired_difference(ll[who, "dreg"], ll[who, "plain"])
            out["dreg_minus_plain"][who] = {"mean": d.mean, "stderr": d.stderr}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "compare"):
        sys.exit(__doc__)
    (run if sys.argv[1] == "run" else compare)(sys.argv[2:])
