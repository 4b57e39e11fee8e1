"""Runs Im et al.'s denoising VAE code unchanged at the suite's budget (issue 20): the reference
for docs/hidden-talents.md's denoising section. Python 2.7, not the suite's Python.

Its model, optimizer and training loop (``main_mnist.py``'s ``lets_train``, ``dvae.DVAE2``,
``optimize.Optimize.ADAM``) run as they are; only the data loading of its ``__main__`` block is
replaced: MNIST read from the IDX files (``$MNIST_IDX``, else ``$PYROVAE_DATA/mnist``), the first
50,000 training images, the last 10,000 as validation and the 10,000 test images, grey levels /
255 binarized once with ``rng.binomial`` as its ``mnist`` branch does; the number of epochs, the
corruption ``corrupt_in`` and the seed come from the command line. Its loop runs ``num_epoch + 1``
passes, so EPOCHS is the number of passes minus one. It saves weights to ``./params/``: run it in
a folder that has one.

Setup (a scratch folder outside the repository; the reference's commit 89bee3d)::

    git clone https://github.com/jiwoongim/DVAE /work/ref/DVAE   # commit 89bee3d
    python2.7 -m pip install --target py2lib numpy==1.16.6 scipy==1.2.3 Theano==1.0.5 \\
        matplotlib==2.2.5 scikit-learn==0.20.4 Pillow==6.2.2
    mkdir -p run/params run/figs && cd run
    PYTHONPATH=../py2lib THEANO_FLAGS=floatX=float32 DVAE_DIR=/work/ref/DVAE \\
        python2.7 /path/to/benchmarks/dvae_reference.py EPOCHS CORRUPT_IN SEED

It prints the reference's own lines (validation and test cost: the clean-input one-sample
negative ELBO) and ``RESULT ...`` with the final test cost. Not a test.
"""
import gzip
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.environ.get("DVAE_DIR", "/work/ref/DVAE"))
import main_mnist as M  # noqa: E402  (the reference's module: its hyper-parameters and lets_train)
from utils import shared_dataset  # noqa: E402


def idx(path):
    """An IDX file's images (rows / 255) or labels."""
    with gzip.open(path) as f:
        magic, n = struct.unpack(">II", f.read(8))
        if magic == 2051:
            rows, cols = struct.unpack(">II", f.read(8))
            return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows * cols) / 255.0
        return np.frombuffer(f.read(), dtype=np.uint8)


def main():
    epochs, corrupt_in, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    folder = os.environ.get("MNIST_IDX") or os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")
    x, y = idx(folder + "/train-images-idx3-ubyte.gz"), idx(folder + "/train-labels-idx1-ubyte.gz")
    xt, yt = idx(folder + "/t10k-images-idx3-ubyte.gz"), idx(folder + "/t10k-labels-idx1-ubyte.gz")
    rng = np.random.RandomState(seed)
    train_set = shared_dataset([rng.binomial(1, x[:50000]), y[:50000]])
    valid_set = shared_dataset([rng.binomial(1, x[50000:]), y[50000:]])
    test_set = shared_dataset([rng.binomial(1, xt), yt])
    opt_params = [M.batch_sz, M.epsilon, M.momentum, epochs, 50000, 10000, 10000, M.binaryF, M.CrossEntropyF,
                  corrupt_in, M.ntype]
    model_params = [M.batch_sz, 784, [M.num_hid], rng, M.num_z, M.binaryF]
    _, cost_te = M.lets_train(train_set, valid_set, test_set, opt_params, model_params, M.model_type)
    print("RESULT passes %d corrupt_in %g seed %d test_cost %g" % (epochs + 1, corrupt_in, seed, cost_te))


if __name__ == "__main__":
    main()
