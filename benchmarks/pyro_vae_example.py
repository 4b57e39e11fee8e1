"""Run Pyro's own VAE example, ``examples/vae/vae.py``, unchanged, on local data, and compare the
network it trains with a ``pyrovae fit --model vae`` run on the same test images: the reference of
docs/vae.md ("against Pyro's example at equal budget").

Two parts, two Pythons.

``run`` (the reference's venv: the example asserts pyro 1.9.1). The example reads MNIST through
``utils/mnist_cached.py``, which subclasses ``pyro.contrib.examples.util.MNIST``, a torchvision
data set that downloads. This script puts in its place one class that exposes the same ``.data``
(uint8, N x 28 x 28) and ``.targets`` (int64, N) tensors, read from local files:

- ``--data binarized-mnist`` (the default here): Larochelle & Murray's fixed binary draw
  (``$PYROVAE_DATA/binarized_mnist/binarized_mnist.npz``), its 50,000 training and 10,000 test
  rows, pixels stored as 0/255 so that the example's own ``x / 255`` gives {0, 1}. The example
  itself trains on MNIST's grey levels used as Bernoulli targets (``validate_args=False``: a
  cross-entropy, not a likelihood of the data), which ``pyrovae fit`` refuses for a Bernoulli
  model; on binary pixels both optimise the same ELBO of the same data, and its log p(x) is a
  probability of the test images;
- ``--data mnist``: the example's own data, the 60,000 + 10,000 grey images of the IDX files.

It stubs ``visdom`` (imported at module level, used only with ``-visdom``), sets one torch
thread, seeds Pyro (``--seed``; the example sets no seed), runs the example as ``__main__`` with
the remaining arguments, and saves the trained encoder and decoder (``--save``) with the process
CPU time and wall time of the run. Everything else (networks, model, guide, Trace_ELBO, Adam,
batch 256 with shuffling, the loop) is the example's own code.

``compare`` (this repository's venv): loads the saved networks as a Pyro pair of the same
architecture and a ``pyrovae fit`` run folder, and scores both with the same estimator
(``pyrovae.evaluation.log_likelihood.iter_log_weights``) on the same test images: the ELBO on all
test images (one draw each, as the example's test loss) and, on a random subset, the
importance-sampled log p(x) with K draws and the K-draw mean ELBO, per image, paired.

Setup, in a scratch folder outside this repository:

    python -m venv .venv && . .venv/bin/activate
    pip install torch pyro-ppl==1.9.1 numpy matplotlib pandas seaborn   # plot_llk needs the last three
    git --git-dir=PYRO/.git show COMMIT:examples/vae/vae.py > vae.py     # and examples/vae/utils/*.py
    mkdir shim && echo 'class Visdom: pass' > shim/visdom.py
    cp PATH/TO/benchmarks/pyro_vae_example.py run_ref.py
    nice python run_ref.py run --seed 0 --save ref.pt -- -n 20 -tf 1000

(``-tf 1000``: the example scores the test set only at epoch 0; ``compare`` scores the end.)
Ours and the comparison, in this repository:

    pyrovae fit --model vae --data binarized-mnist --z-dim 50 --hidden-dims 400 --activation softplus \
        --batch-size 256 --lr 1e-3 --epochs 20 --seed 0 --threads 1 --out runs/vae-pyro
    python benchmarks/pyro_vae_example.py compare --reference ref.pt --ours runs/vae-pyro \
        --num-samples 1000 --num-test 500 --json vae_vs_pyro.json
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


def _images(data, train):
    """uint8 (N, 28, 28) images: grey levels 0..255, or a binary draw stored as 0/255."""
    if data == "mnist":
        return _idx(("train" if train else "t10k") + "-images-idx3-ubyte.gz").copy()
    arrays = np.load(os.path.join(DATA, "binarized_mnist", "binarized_mnist.npz"))
    return (arrays["train" if train else "test"].reshape(-1, 28, 28) * 255).astype(np.uint8)


def run(argv):
    parser = argparse.ArgumentParser(prog="run_ref.py run")
    parser.add_argument("--data", choices=["binarized-mnist", "mnist"], default="binarized-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="save the trained networks and the times here")
    parser.add_argument("example_args", nargs=argparse.REMAINDER, help="-- then the example's arguments")
    args = parser.parse_args(argv)
    example_args = [a for a in args.example_args if a != "--"]

    torch.set_num_threads(1)
    sys.path.insert(0, os.path.join(HERE, "shim"))
    sys.path.insert(0, HERE)

    class MNIST(torch.utils.data.Dataset):
        def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False):
            images = _images(args.data, train)
            self.data = torch.from_numpy(images)
            self.targets = torch.zeros(len(images), dtype=torch.int64)  # the VAE reads no labels

        def __len__(self):
            return len(self.data)

    import pyro
    import pyro.contrib.examples

    util = types.ModuleType("pyro.contrib.examples.util")
    util.MNIST = MNIST
    util.get_data_directory = lambda filepath=None: os.path.join(HERE, ".data")
    sys.modules["pyro.contrib.examples.util"] = util
    pyro.contrib.examples.util = util

    pyro.set_rng_seed(args.seed)
    sys.argv = [os.path.join(HERE, "vae.py")] + example_args
    cpu0, wall0 = time.process_time(), time.time()
    namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    vae = namespace["model"]
    epochs = namespace["args"].num_epochs
    print(f"reference: {epochs} epochs, {cpu:.1f} s CPU ({cpu / epochs:.2f} s/epoch), {wall:.1f} s wall")
    if args.save:
        torch.save({"encoder": vae.encoder.state_dict(), "decoder": vae.decoder.state_dict(),
                    "z_dim": vae.z_dim, "epochs": epochs, "cpu_s": cpu, "wall_s": wall, "data": args.data,
                    "seed": args.seed, "example_args": example_args}, args.save)


# ------------------------------------------------------------------ compare (this repository's venv)


def reference_pair(saved):
    """The saved networks as a Pyro model and guide over the site ``z`` (the example's
    architecture: softplus hidden layers, the guide's scale exp(.), Bernoulli pixels)."""
    import pyro
    import pyro.distributions as dist
    import torch.nn.functional as F

    enc, dec, z_dim = saved["encoder"], saved["decoder"], saved["z_dim"]

    def linear(params, name, h):
        return F.linear(h, params[name + ".weight"], params[name + ".bias"])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            logits = linear(dec, "fc21", F.softplus(linear(dec, "fc1", z)))
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            h = F.softplus(linear(enc, "fc1", x))
            pyro.sample("z", dist.Normal(linear(enc, "fc21", h), linear(enc, "fc22", h).exp()).to_event(1))

    return model, guide


def score(model, guide, x, subset, num_samples, seed):
    """The one-draw ELBO of every row of ``x``, and on ``x[subset]`` the K-draw importance-sampled
    log p(x) and mean ELBO, per row."""
    import pyro
    from pyrovae.evaluation.log_likelihood import iter_log_weights
    from pyrovae.infer.importance import log_mean_exp

    pyro.set_rng_seed(seed)
    with torch.no_grad():
        elbo1 = torch.cat([w[0] for w in iter_log_weights(model, guide, {"x": x}, 1, 1000)])
        parts = list(iter_log_weights(model, guide, {"x": x[subset]}, num_samples, 50))
    ll = torch.cat([log_mean_exp(w, 0) for w in parts]).double()
    elbo_k = torch.cat([w.mean(0) for w in parts]).double()
    return elbo1.double(), ll, elbo_k


def compare(argv):
    parser = argparse.ArgumentParser(prog="pyro_vae_example.py compare")
    parser.add_argument("--reference", required=True, help="the file run --save wrote")
    parser.add_argument("--ours", required=True, nargs="+", help="pyrovae fit run folders on the same data")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=500, help="random test images for log p(x)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        help="import this module first (a run's user-registered guide)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import importlib
    for name in args.imports:
        importlib.import_module(name)
    from pyrovae.infer.importance import mean_and_stderr
    from pyrovae.training.run_folder import load_run

    saved = torch.load(args.reference, map_location="cpu")
    x = torch.from_numpy(_images(saved["data"], train=False).reshape(-1, 784).astype(np.float32) / 255)
    subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[:args.num_test]
    reference = score(*reference_pair(saved), x, subset, args.num_samples, args.seed)
    names = ("elbo_all_test", "log_px", "elbo_K")
    out = {"data": saved["data"], "test_images": len(x), "subset": args.num_test, "K": args.num_samples,
           "reference": {"epochs": saved["epochs"], "cpu_s": saved["cpu_s"], "wall_s": saved["wall_s"],
                         "example_args": saved["example_args"], "seed": saved["seed"],
                         **{name: mean_and_stderr(v) for name, v in zip(names, reference)}},
           "ours": []}
    for path in args.ours:
        ours = load_run(path)
        mine = score(ours.model, ours.guide, x, subset, args.num_samples, args.seed)
        row = {"run": str(path), "epochs": ours.epoch, **{name: mean_and_stderr(v) for name, v in zip(names, mine)}}
        for name, a, b in zip(names, mine, reference):
            row["minus_reference_" + name] = mean_and_stderr(a - b)
        out["ours"].append(row)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "compare"):
        sys.exit(__doc__)
    (run if sys.argv[1] == "run" else compare)(sys.argv[2:])
