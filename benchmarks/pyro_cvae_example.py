"""Run Pyro's own CVAE example, ``examples/cvae/main.py``, unchanged, on this suite's MNIST halves:
the reference of docs/cvae.md ("against Pyro's example at equal budget").

The example trains its baseline network and then its CVAE on MNIST quadrants (``-nq 2``: the left
half of each digit given, the right half predicted), keeps the epoch with the lowest loss on its
"val" split (MNIST's test set), and prints the negative conditional ELBO (10 particles) of the
CVAE and the exact negative log-likelihood of the baseline on that split. Its data loader
(``mnist.py``) reads ``pyro.contrib.examples.util.MNIST`` through torchvision, which has no CPU
build here. This script puts in their place:

- one class ``MNIST`` that serves, as ``train``, the first 50,000 MNIST training images (the
  suite's training split of ``mnist-halves``), binarized afresh at every read (dynamic
  binarization, as the suite trains), and, as ``val``, the suite's 10,000 binarized test images,
  bit for bit (written by ``--export``); every image is transposed, so that the example's
  "left half" is the suite's top half and its task is the suite's: the top 14 rows given, the
  bottom 14 predicted (the networks are fully connected, so the transposition changes nothing else);
- ``torchvision.transforms.Compose`` / ``functional.to_tensor`` (the uint8 image as a float
  ``(1, 28, 28)`` tensor in [0, 1]) and ``torchvision.utils.make_grid`` (only for its figure);

it seeds torch and numpy (``--seed``, default 0; the example seeds nothing) and runs ``main.py``
as ``__main__`` with the remaining arguments. Everything else (networks, model, guide, ELBO,
loop, early stopping, its table) is the example's code. Its networks and its trained weights are
then scored on the same test images with the suite's estimator by
``benchmarks/cvae_mnist.py --reference DIR``.

Setup, in a scratch folder DIR outside this repository (the example asserts pyro 1.9.1):

    python -m venv .venv && . .venv/bin/activate && pip install torch pyro-ppl==1.9.1 numpy pandas matplotlib tqdm
    for f in __init__ baseline cvae main mnist util; do
        git --git-dir=PYRO/.git show ff6ae1c95:examples/cvae/$f.py > $f.py; done
    python PATH/TO/benchmarks/pyro_cvae_example.py --export DIR/halves_test.npz   # the suite's venv
    cp PATH/TO/benchmarks/pyro_cvae_example.py run_ref.py
    python run_ref.py --seed 0 -nq 2 -n 10            # its defaults otherwise: batch 128, Adam 1e-3
"""
import gzip
import os
import runpy
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
IDX = os.environ.get("MNIST_IDX") or os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")
TEST = os.environ.get("HALVES_TEST") or os.path.join(HERE, "halves_test.npz")
#: mnist-halves trains on the first 50,000 images (the last 10,000 are its valid split); $NUM_TRAIN: fewer, for a smoke run
NUM_TRAIN = int(os.environ.get("NUM_TRAIN", 50000))


def export(path):
    """Write the suite's binarized ``mnist-halves`` test images, whole (N, 28, 28) uint8 0/1."""
    from pyrovae.data.datasets import load_dataset
    from pyrovae.data.halves import join_halves

    test = load_dataset("mnist-halves", data_dir=os.environ.get("PYROVAE_DATA")).test
    images = join_halves(test["x"], test["y"]).view(-1, 28, 28).round().to(torch.uint8).numpy()
    np.savez_compressed(path, images=images)
    print(f"wrote {len(images)} test images to {path}")


def _idx(name):
    with gzip.open(os.path.join(IDX, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class MNIST(torch.utils.data.Dataset):
    """train: the first 50,000 training images, redrawn binary at each read; else the suite's
    binarized test images. Each transposed, uint8 0/255 (0/1 after ``to_tensor``)."""

    def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False):
        self.train = train
        if train:
            self.grey = _idx("train-images-idx3-ubyte.gz")[:NUM_TRAIN].astype(np.float32) / 255.0
            self.targets = _idx("train-labels-idx1-ubyte.gz")[:NUM_TRAIN].astype(np.int64)
        else:
            self.binary = np.load(TEST)["images"]
            self.targets = _idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if self.train:
            image = (np.random.random_sample(self.grey[i].shape) < self.grey[i]).astype(np.uint8)
        else:
            image = self.binary[i]
        return np.ascontiguousarray(image.T) * np.uint8(255), int(self.targets[i])


def to_tensor(pic):
    return torch.from_numpy(np.asarray(pic, dtype=np.float32) / 255.0).unsqueeze(0)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, sample):
        for t in self.transforms:
            sample = t(sample)
        return sample


def make_grid(tensor, nrow=8, padding=0):
    """The (3, H, W) grid of ``(B, C, h, w)`` images, ``nrow`` per row (no padding)."""
    b, c, h, w = tensor.shape
    if c == 1:
        tensor = tensor.expand(b, 3, h, w)
    rows = -(-b // nrow)
    grid = tensor.new_zeros(3, rows * h, nrow * w)
    for k in range(b):
        r, q = divmod(k, nrow)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = tensor[k]
    return grid


def install_shims():
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    utils = types.ModuleType("torchvision.utils")
    functional.to_tensor = to_tensor
    transforms.Compose, transforms.functional = Compose, functional
    utils.make_grid = make_grid
    tv.transforms, tv.utils = transforms, utils
    sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional, "torchvision.utils": utils})

    import pyro.contrib.examples

    util = types.ModuleType("pyro.contrib.examples.util")
    util.MNIST = MNIST
    util.get_data_directory = lambda filepath=None: os.path.join(HERE, ".data")
    sys.modules["pyro.contrib.examples.util"] = util
    pyro.contrib.examples.util = util


def main(argv):
    if argv[:1] == ["--export"]:
        return export(argv[1])
    seed = 0
    if argv[:1] == ["--seed"]:
        seed, argv = int(argv[1]), argv[2:]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    install_shims()
    sys.path.insert(0, HERE)
    sys.argv = [os.path.join(HERE, "main.py")] + argv
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
