"""Run Kingma et al.'s own M1+M2 code (github.com/dpkingma/nips14-ssl, commit 1fc7aec, Theano,
Python 2.7) unchanged at a small budget: the reference of docs/semi-supervised.md's M1+M2 section.

Its scripts are ``run_gpulearn_z_x.py mnist`` (M1: a VAE 784-500-500-50, softplus, fit without
labels until stopped, its parameters saved every 10 epochs) and ``run_2layer_ssl.py N_LABELS SEED``
(M2 on the means of the M1 saved in ``models/mnist_z_x_50-500-500_longrun/``, 3000 passes,
printing the test error of q(y | x) after each). This driver calls the same functions with the
same arguments and only:

- ``data``: writes ``$ML_DATA_PATH/mnist/mnist_28.pkl.gz``, the pickle its loader reads (absent
  from the repository), from the MNIST IDX files (``$MNIST_IDX``): ``(train, valid, test)`` =
  the first 50,000 training images, the last 10,000, the test images, grey levels / 255 (float32)
  and labels;
- ``m1 EPOCHS``: ``gpulearn_z_x.main`` as ``run_gpulearn_z_x.py mnist`` calls it, its loop
  (``loop_va``) given ``EPOCHS`` epochs instead of its 9,999,999 (the hook saves the parameters
  at epochs 10, 20, ...: EPOCHS a multiple of 10);
- ``m2 PASSES N_LABELS SEED``: ``learn_yz_x_ss.main`` as ``run_2layer_ssl.py`` calls it, with
  ``PASSES`` passes instead of 3000; ``anglepy.sfo`` (imported by ``learn_yz_x_ss``, never used,
  missing from the repository) is stubbed. It reads M1 from
  ``models/mnist_z_x_50-500-500_longrun/`` under the working directory: the shipped M1 (trained
  for a long run) or, copied there, the one ``m1`` wrote.

Setup (the Python 2.7 + Theano 1.0.5 environment of benchmarks/burda_iwae_reference.py):

    python2.7 -m pip install --target py2lib numpy==1.16.6 scipy==1.2.3 Theano==1.0.5 Pillow==6.2.2
    git --git-dir=nips14-ssl/.git archive ...  # or git show each file into DIR (the pickle is not in it)
    export PYTHONPATH=py2lib THEANO_FLAGS=floatX=float32 OMP_NUM_THREADS=1 ML_DATA_PATH=DIR/data SSL_DIR=DIR
    python2.7 kingma_ssl_reference.py data
    python2.7 kingma_ssl_reference.py m1 10                    # in DIR; writes results/gpulearn_z_x_mnist_*/
    python2.7 kingma_ssl_reference.py m2 8 100 0               # in a folder whose models/ holds the M1
"""
import gzip
import os
import sys
import types

import numpy as np

SSL_DIR = os.environ.get("SSL_DIR", ".")
sys.path.insert(0, SSL_DIR)


def _idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = ord(raw[3:4])
    shape = tuple(int(np.frombuffer(raw[4 + 4 * i: 8 + 4 * i], ">u4")[0]) for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_data():
    import cPickle
    idx = os.environ.get("MNIST_IDX") or os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")
    x = _idx(os.path.join(idx, "train-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0
    y = _idx(os.path.join(idx, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    tx = _idx(os.path.join(idx, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0
    ty = _idx(os.path.join(idx, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    out = os.path.join(os.environ["ML_DATA_PATH"], "mnist")
    if not os.path.isdir(out):
        os.makedirs(out)
    with gzip.open(os.path.join(out, "mnist_28.pkl.gz"), "wb") as f:
        cPickle.dump(((x[:50000], y[:50000]), (x[50000:], y[50000:]), (tx, ty)), f, 2)
    print("wrote %s" % os.path.join(out, "mnist_28.pkl.gz"))


def run_m1(epochs):
    import gpulearn_z_x
    loop = gpulearn_z_x.loop_va
    gpulearn_z_x.loop_va = lambda do_epoch, hook: loop(do_epoch, hook, n_epochs=epochs + 1)  # t = 1..epochs
    gpulearn_z_x.main(dataset='mnist', n_z=50, n_hidden=(500, 500), seed=0, comment='', gfx=True)


def run_m2(passes, n_labels, seed):
    sfo = types.ModuleType("anglepy.sfo")
    sfo.SFO = None
    sys.modules["anglepy.sfo"] = sfo
    import learn_yz_x_ss
    if n_labels == 100:  # run_2layer_ssl.py's two settings
        learn_yz_x_ss.main(passes, n_labels, dataset='mnist_2layer', n_z=50, n_hidden=(300,), seed=seed, alpha=0.1,
                           n_minibatches=100, comment='')
    else:
        learn_yz_x_ss.main(passes, n_labels, dataset='mnist_2layer', n_z=50, n_hidden=(500,), seed=seed, alpha=0.1,
                           n_minibatches=200, comment='')


if __name__ == "__main__":
    stage = sys.argv[1]
    if stage == "data":
        write_data()
    elif stage == "m1":
        run_m1(int(sys.argv[2]))
    elif stage == "m2":
        run_m2(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
