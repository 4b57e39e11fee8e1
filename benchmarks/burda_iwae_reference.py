"""Runs Burda et al.'s IWAE code unchanged at the suite's budget (issue 20): the reference for
docs/hierarchical.md's IWAE row. Python 2.7 + Theano 1.0.5, not the suite's Python.

Its model (``iwae.random_iwae``: the paper's initialisation, output bias at the training mean's
logit), optimizer (``optimizers.Adam``: beta_1 0.99 in its code, beta_2 0.999, eps 1e-4), training
loop (``train.train``, batch 20) and estimator (``IWAE.log_marginal_likelihood_estimate``) run as
they are. Only the data loading is replaced: ``datasets.binarized_mnist`` reads the uncompressed
IDX files that ``download_mnist.py`` downloads; here the IDX files are read from ``$MNIST_IDX``
(else ``$PYROVAE_DATA/mnist``) and handed to its own ``DatasetTheano``/``BinarizedDatasetTheano``
(dynamic binarization, as its MNIST branch): the first NUM_TRAIN training images, the test set's
first NUM_TEST images; with ``$TEST_NPY`` the test images are the suite's binary ones (drawn once,
seed 0, as ``pythae_reference.load_mnist`` draws them; 0/1 images pass its binarization as they
are), so both sides score the same images; ``$OUT_JSON`` receives the per-image figures. The schedule is its ``checkpoint1to8``'s first STAGES stages (stage i:
3^(i-1) passes at learning rate 1e-4 * round(10^(1 - (i-1)/7), 1): 1 pass at 1e-3, then 3 at
7.2e-4, ...). Its random stream is ``utils.srng(123 + SEED)`` (SEED 0: its default, 123); its
initialisation's seed (123, fixed in ``nnet.py``) is left as it is.

Setup (a scratch folder outside the repository; the reference's commit 78a6075)::

    git clone https://github.com/yburda/iwae /work/ref/burda/iwae        # commit 78a6075
    python2.7 -m pip install --target py2lib numpy==1.16.6 scipy==1.2.3 Theano==1.0.5
    python2.7 -m pip install --target py2extra progressbar==2.5
    PYTHONPATH=py2lib:py2extra THEANO_FLAGS=floatX=float32 OMP_NUM_THREADS=1 IWAE_DIR=iwae \\
        python2.7 /path/to/benchmarks/burda_iwae_reference.py MODEL K STAGES SEED NUM_TRAIN NUM_TEST EVAL_K

MODEL is vae or iwae, K the training samples; ``LAYERS=2`` in the environment builds its two
stochastic layers (784-200-200-100-100-100-50, as its ``experiments.py``) instead of one. It prints ``RESULT ...``: the test log p(x) estimate
with EVAL_K importance samples (its estimator) on the first NUM_TEST test images, its standard
error over images, and the process CPU seconds per training pass. Not a test.
"""
import gzip
import json
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.environ.get("IWAE_DIR", "/work/ref/burda/iwae"))
import datasets  # noqa: E402  (the reference's modules)
import iwae  # noqa: E402
import optimizers  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402

import theano  # noqa: E402
import theano.tensor as T  # noqa: E402


def idx_images(path):
    """An IDX file's images, grey levels / 255 (as its loader)."""
    with gzip.open(path) as f:
        _, n, rows, cols = struct.unpack(">iiii", f.read(16))
        return (np.frombuffer(f.read(), dtype=np.uint8) / 255.0).astype("float32").reshape(n, rows * cols)


def main():
    model_type, k, stages, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    num_train, num_test, eval_k = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    folder = os.environ.get("MNIST_IDX") or os.path.join(os.environ.get("PYROVAE_DATA", "."), "mnist")
    x = idx_images(folder + "/train-images-idx3-ubyte.gz")
    xt = idx_images(folder + "/t10k-images-idx3-ubyte.gz")
    if os.environ.get("TEST_NPY"):  # the suite's binary test images (its loader binarizes 0/1 as they are)
        xt = np.load(os.environ["TEST_NPY"]).astype("float32")
    # its DatasetTheano keeps the last n_used_for_validation rows as validation
    dataset = datasets.BinarizedDatasetTheano(
        datasets.DatasetTheano(x[:num_train + 400], xt[:num_test], 400, shuffle=False))
    if os.environ.get("LAYERS", "1") == "2":  # its two stochastic layers (the paper's; its experiments.py's sizes)
        model = iwae.random_iwae(latent_units=[784, 100, 50], hidden_units_q=[[200, 200], [100, 100]],
                                 hidden_units_p=[[100, 100], [200, 200]], dataset=dataset)
    else:
        model = iwae.random_iwae(latent_units=[784, 50], hidden_units_q=[[200, 200]], hidden_units_p=[[200, 200]],
                                 dataset=dataset)
    srng = utils.srng(123 + seed)  # seed 0: its default stream (MRG seeds must be > 0)
    optimizer = optimizers.Adam(model=model, learning_rate=1e-3)
    passes, cpu = 0, 0.0
    for i in range(1, stages + 1):
        optimizer.learning_rate = 1e-4 * round(10. ** (1 - (i - 1) / 7.), 1)
        start = time.clock()
        model = train.train(model=model, dataset=dataset, optimizer=optimizer, minibatch_size=20,
                            n_epochs=3 ** (i - 1), srng=srng, num_samples=k, model_type=model_type)
        cpu += time.clock() - start
        passes += 3 ** (i - 1)
    # its estimator, per image (iwae.measure_marginal_log_likelihood returns only the mean)
    esrng = utils.srng(123)
    index = T.lscalar("i")
    batch = dataset.minibatchIindex_minibatch_size(index, 20, subdataset="test", srng=esrng)
    estimate = theano.function([index], model.log_marginal_likelihood_estimate(batch, eval_k, esrng))
    values = np.concatenate([np.ravel(estimate(i)) for i in range((num_test + 19) // 20)])
    print("RESULT layers %s model %s k %d passes %d train %d seed %d test_logpx %.3f se %.3f (K = %d, %d test images) "
          "cpu_s_per_pass %.1f" % (os.environ.get("LAYERS", "1"), model_type, k, passes, num_train, seed, values.mean(),
                                   values.std(ddof=1) / np.sqrt(len(values)), eval_k, len(values), cpu / passes))
    if os.environ.get("OUT_JSON"):
        with open(os.environ["OUT_JSON"], "w") as f:
            json.dump({"log_px": [float(v) for v in values], "cpu_s_per_pass": cpu / passes}, f)


if __name__ == "__main__":
    main()
