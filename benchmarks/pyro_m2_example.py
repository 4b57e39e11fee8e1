"""Run Pyro's own M2 example, ``examples/vae/ss_vae_M2.py``, unchanged, on the local MNIST IDX files:
the reference of docs/semi-supervised.md ("M2 against Pyro's example").

The example's data loader (``utils/mnist_cached.py``) subclasses
``pyro.contrib.examples.util.MNIST``, a torchvision data set that downloads. This script puts in
its place one class that reads the IDX files (``$MNIST_IDX``, default ``$PYROVAE_DATA/mnist``)
with numpy and exposes the same ``.data`` (uint8, N x 28 x 28) and ``.targets`` (int64, N)
tensors; it stubs ``visdom`` (imported at module level, used only with ``--visualize``), sets one
torch thread, and runs the example as ``__main__`` with the arguments given. Everything else
(networks, model, guide, losses, loop, split, evaluation) is the example's own code.

Setup, in a scratch folder outside this repository (the example asserts pyro 1.9.1):

    python -m venv .venv && . .venv/bin/activate && pip install torch pyro-ppl==1.9.1 numpy
    git --git-dir=PYRO/.git show COMMIT:examples/vae/ss_vae_M2.py > ss_vae_M2.py   # and utils/*.py
    mkdir shim && echo 'class Visdom: pass' > shim/visdom.py
    cp PATH/TO/benchmarks/pyro_m2_example.py run_ref.py
    python run_ref.py --seed 0 -n 10 --aux-loss -alm 46 -enum parallel -sup 3000 -zd 50 -hl 500 \
        -lr 0.00042 -b1 0.95 -bs 200 -log ./ref10.log
"""
import gzip, os, runpy, sys, types

import numpy as np
import torch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "shim"))
sys.path.insert(0, HERE)
IDX = os.environ.get("MNIST_IDX") or os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")


def _idx(name):
    with gzip.open(os.path.join(IDX, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class MNIST(torch.utils.data.Dataset):
    def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False):
        p = "train" if train else "t10k"
        self.data = torch.from_numpy(_idx(f"{p}-images-idx3-ubyte.gz").copy())
        self.targets = torch.from_numpy(_idx(f"{p}-labels-idx1-ubyte.gz").astype(np.int64))

    def __len__(self):
        return len(self.data)


import pyro.contrib.examples  # noqa: E402

util = types.ModuleType("pyro.contrib.examples.util")


def print_and_log(logger, msg):
    print(msg)
    sys.stdout.flush()
    if logger is not None:
        logger.write("{}\n".format(msg))
        logger.flush()


util.MNIST = MNIST
util.print_and_log = print_and_log
util.get_data_directory = lambda filepath=None: os.path.join(HERE, ".data")
sys.modules["pyro.contrib.examples.util"] = util
pyro.contrib.examples.util = util

sys.argv = [os.path.join(HERE, "ss_vae_M2.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
