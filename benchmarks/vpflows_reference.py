# -*- coding: utf-8 -*-
"""Run Tomczak & Welling's own convex-combination linear IAF code (jmtomczak/vae_vpflows, commit
51fa78f, ``experiment.py`` unchanged; PyTorch) on local data, and pair its test log-likelihood per
image with the suite's full-covariance guide (``benchmarks/guides_mnist.py``) on the same test
images: the reference of the ``fullcov`` row (docs/guides.md, "Against the authors' linear IAF
(vae_vpflows) at equal budget").
Not a test.

For a given x the reference's ccLinIAF posterior is a full-covariance Gaussian: z0 ~ N(mu(x),
diag sigma(x)^2), then z1 = L(x) z0 with L(x) unit lower triangular, a softmax-weighted sum of
``--number_combination`` matrices that the encoder outputs (volume preserving: log q(z1) =
log q(z0)). With ``--number_combination 1`` it is Kingma et al.'s linear IAF.

Two parts, two Pythons; this file parses in both.

``run`` (Python 2.7 with torch 1.0.0: the reference is PyTorch 0.3 code, with Python 2 integer
division in its scoring, ``scipy.misc.logsumexp`` (SciPy <= 1.2) and ``Variable``; torch 0.3 and
0.4 wheels are not on PyPI, 1.0.0 is the oldest there). ``experiment.py --dataset_name
dynamic_mnist`` reads MNIST through ``keras.datasets.mnist.load_data()``, the one thing this
script replaces (a stand-in module): its 60,000 training images are the local IDX training file
(the reference keeps the first 50,000 for training, the suite's training split, and binarizes
them afresh for each batch; the last 10,000 are its validation set), its test images the suite's
binarized test images (``--data``, written by ``compare --write-data``; the reference's own
``np.random.binomial`` redraw of a {0, 1} pixel is that pixel, so it scores exactly these images).
Five shims let the torch-0.3 code run on torch 1.0 without changing what it computes:
``tensor.data[0]`` of a 0-dim tensor returns its number (torch 0.3's 1-element losses),
``torch.tril(x, k=-1)`` is ``torch.tril(x, diagonal=-1)``, ``torch.sum(x, None)`` sums all
elements (the reference's ``dim=None`` default), ``TensorDataset.data_tensor`` / ``target_tensor`` are the data set's two tensors (renamed
``tensors`` in torch 0.4), and matplotlib draws off screen. The script then reads what the
reference computes but does not keep: the per-image log-likelihoods of its
``calculate_likelihood`` (handed to ``plot_histogram``), run with ``--num-samples`` importance
samples (its default is 5000; the suite's budget is 1000; without autograd's graphs, which it
builds and drops), the bounds of its
``calculate_lower_bound`` (the test ELBO), and the process CPU time spent in its training
function. Everything else (gated networks, 784-300-300-z, Xavier initialisation, the
reparameterised ELBO with its warm-up ``--warmup``, Adam, the loop, validation, the final
evaluation) is the reference's own code, run with its command-line flags.

``compare`` (this repository's venv): ``--write-data FILE`` saves the local IDX training images
and the suite's first ``--num-test`` binarized test images for ``run``; then, given the JSON that
``run`` wrote for each reference model and the ``--per-datapoint`` file of
``benchmarks/guides_mnist.py`` on the same test images (or more: the pairs are the
reference's first N), it prints the per-image paired differences (ours - reference) and writes
them as JSON.

Setup, in a scratch folder outside this repository:

    git --git-dir=vae_vpflows/.git archive 51fa78f | tar -x -C vpflows
    python2.7 -m pip install --target py27 torch==1.0.0 numpy==1.16.6 scipy==1.2.3 matplotlib==2.2.5
    python benchmarks/vpflows_reference.py compare --write-data data.npz --num-test 500
    PYTHONPATH=py27 OMP_NUM_THREADS=1 python2.7 vpflows_reference.py run --code vpflows \\
        --data data.npz --num-samples 1000 --save ref_k1.json -- --model_name vae_ccLinIAF \\
        --dataset_name dynamic_mnist --z1_size 50 --epochs 10 --batch_size 100 --lr 0.001 \\
        --warmup 0 --seed 0 --number_combination 1 --no-cuda
    python benchmarks/vpflows_reference.py compare --reference linIAF=ref_k1.json --ours ours.json

(``ours.json``: ``guides_mnist.py --hidden-dims 300 300 --guides fullcov --per-datapoint``.)
"""
from __future__ import division, print_function

import argparse
import gzip
import importlib
import json
import os
import sys
import time
import types

import numpy as np

DATA = os.environ.get("PYROVAE_DATA", ".")
COMMIT = "51fa78fe47f0babaff92f87d6f43bb5cfbb7c98a"


def _cpu():
    """The process CPU time, user + system (both Pythons)."""
    times = os.times()
    return times[0] + times[1]


def _idx(name):
    with gzip.open(os.path.join(DATA, "mnist", name), "rb") as f:
        raw = f.read()
    ndim = bytearray(raw[3:4])[0]
    shape = tuple(int(np.frombuffer(raw[4 + 4 * i: 8 + 4 * i], dtype=">u4")[0]) for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def keras_stand_in(arrays):
    """Modules ``keras``, ``keras.datasets`` and ``keras.datasets.mnist`` whose ``load_data()``
    gives ``arrays`` (from ``compare --write-data``) as Keras's MNIST does: uint8 images
    (N, 28, 28) and labels; the test images are the binary ones scaled to 0/255."""
    train = (np.asarray(arrays["train_x"], dtype=np.uint8), np.asarray(arrays["train_y"]))
    test_x = np.asarray(arrays["test_x"])
    if not np.all((test_x == 0) | (test_x == 1)):
        raise ValueError("the test images must be binary")
    test = ((test_x * 255).astype(np.uint8).reshape(-1, 28, 28), np.asarray(arrays["test_y"]))
    mnist = types.ModuleType("keras.datasets.mnist")
    mnist.load_data = lambda: ((train[0].copy(), train[1].copy()), (test[0].copy(), test[1].copy()))
    datasets = types.ModuleType("keras.datasets")
    datasets.mnist = mnist
    keras = types.ModuleType("keras")
    keras.datasets = datasets
    return {"keras": keras, "keras.datasets": datasets, "keras.datasets.mnist": mnist}


def torch03_compat(torch):
    """Let torch-0.3 code run on a later torch: ``t[0]`` of a 0-dim tensor is its number,
    ``torch.tril`` takes ``k`` (renamed ``diagonal`` in torch 0.4), ``torch.sum(x, None)`` and
    ``torch.mean(x, None)`` reduce over all elements (as in torch 0.3), and ``TensorDataset`` has
    ``data_tensor`` and ``target_tensor``. Returns an undo function."""
    tensor_getitem = torch.Tensor.__getitem__
    dataset = importlib.import_module("torch.utils.data").TensorDataset

    def getitem(self, index):
        if isinstance(index, int) and index in (0, -1) and self.dim() == 0:
            return self.item()
        return tensor_getitem(self, index)

    torch.Tensor.__getitem__ = getitem
    tril = torch.tril

    def tril_k(input, *args, **kwargs):
        if "k" in kwargs:
            kwargs["diagonal"] = kwargs.pop("k")
        return tril(input, *args, **kwargs)

    torch.tril = tril_k
    reductions = {"sum": torch.sum, "mean": torch.mean}

    def without_none_dim(reduce):
        def call(input, *args, **kwargs):
            if args and args[0] is None:
                args = args[1:]
            if "dim" in kwargs and kwargs["dim"] is None:
                del kwargs["dim"]
            return reduce(input, *args, **kwargs)
        return call

    for name, reduce in reductions.items():
        setattr(torch, name, without_none_dim(reduce))
    added = [name for name in ("data_tensor", "target_tensor") if not hasattr(dataset, name)]
    if "data_tensor" in added:
        dataset.data_tensor = property(lambda self: self.tensors[0])
    if "target_tensor" in added:
        dataset.target_tensor = property(lambda self: self.tensors[1])

    def undo():
        torch.Tensor.__getitem__ = tensor_getitem
        torch.tril = tril
        for name, reduce in reductions.items():
            setattr(torch, name, reduce)
        for name in added:
            delattr(dataset, name)

    return undo


def watch_scoring(module, model_class, num_samples, record, no_grad):
    """Score with ``num_samples`` importance samples and keep what the reference computes:
    ``calculate_likelihood`` hands ``plot_histogram`` minus the per-image log-likelihoods;
    ``calculate_lower_bound`` returns minus the mean ELBO (its calls: the test set, then the
    binarized training set)."""
    likelihood = model_class.calculate_likelihood
    lower_bound = model_class.calculate_lower_bound

    def plot_histogram(x, directory, mode):
        record.setdefault("per_image", {})[mode] = [-float(v) for v in np.asarray(x).reshape(-1)]

    def calculate_likelihood(self, X, directory, mode="test", S=None):
        with no_grad():  # the reference builds graphs here that it never uses
            return likelihood(self, X, directory, mode=mode, S=num_samples)

    def calculate_lower_bound(self, X_full):
        value = lower_bound(self, X_full)
        record.setdefault("lower_bounds", []).append(float(value))
        return value

    module.plot_histogram = plot_histogram
    model_class.calculate_likelihood = calculate_likelihood
    model_class.calculate_lower_bound = calculate_lower_bound


def run(argv):
    parser = argparse.ArgumentParser(prog="vpflows_reference.py run")
    parser.add_argument("--code", required=True, help="the folder holding experiment.py, models/ and utils/")
    parser.add_argument("--data", required=True, help="the .npz from compare --write-data")
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--save", required=True, help="JSON: per-image log p(x), test ELBO and CPU times")
    parser.add_argument("reference_args", nargs=argparse.REMAINDER, help="-- then experiment.py's flags")
    args = parser.parse_args(argv)
    reference_args = [a for a in args.reference_args if a != "--"]
    code = os.path.abspath(args.code)

    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    undo = torch03_compat(torch)
    try:
        _run(args, reference_args, code, torch)
    finally:
        undo()


def _run(args, reference_args, code, torch):
    import runpy

    with np.load(args.data) as f:
        arrays = dict((k, f[k]) for k in f.files)
    sys.modules.update(keras_stand_in(arrays))
    sys.path.insert(0, code)
    import utils.training as training

    record, train_cpu = {}, [0.0]

    def timed(function):
        def call(*fargs, **fkwargs):
            t0 = _cpu()
            out = function(*fargs, **fkwargs)
            train_cpu[0] += _cpu() - t0
            return out
        return call

    for name in ("train_vae", "train_vae_VPflow"):
        setattr(training, name, timed(getattr(training, name)))
    model_name = reference_args[reference_args.index("--model_name") + 1]
    module_name = {"vae": "models.VAE", "vae_HF": "models.VAE_HF", "vae_ccLinIAF": "models.VAE_ccLinIAF"}[model_name]
    __import__(module_name)
    module = sys.modules[module_name]
    watch_scoring(module, module.VAE, args.num_samples, record, torch.no_grad)

    sys.argv = [os.path.join(code, "experiment.py")] + reference_args
    cpu0, wall0 = _cpu(), time.time()
    namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    cpu, wall = _cpu() - cpu0, time.time() - wall0
    per_image = np.array(record["per_image"]["test"])
    if len(per_image) != len(arrays["test_x"]):
        sys.exit("scored %d test images, expected %d" % (len(per_image), len(arrays["test_x"])))
    epochs = namespace["args"].epochs
    out = {"commit": COMMIT, "reference_args": reference_args, "torch": torch.__version__,
           "test_images": len(per_image), "K": args.num_samples, "per_image": per_image.tolist(),
           "log_px": [float(per_image.mean()), float(per_image.std(ddof=1) / np.sqrt(len(per_image)))],
           "test_elbo": -record["lower_bounds"][0], "train_elbo": -record["lower_bounds"][1],
           "train_cpu_s": train_cpu[0], "train_cpu_s_per_epoch": train_cpu[0] / max(epochs, 1), "cpu_s": cpu, "wall_s": wall}
    print("RESULT %s: log p(x) %.2f +- %.2f (K=%d, %d test images), test ELBO %.2f, %.1f CPU s/epoch of training"
          % (model_name, out["log_px"][0], out["log_px"][1], args.num_samples, len(per_image), out["test_elbo"],
             out["train_cpu_s_per_epoch"]))
    with open(args.save, "w") as f:
        json.dump(out, f)


def compare(argv):
    parser = argparse.ArgumentParser(prog="vpflows_reference.py compare")
    parser.add_argument("--write-data", default=None,
                        help="save the IDX training images and the first --num-test binarized test images here (.npz)")
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--reference", nargs="*", default=[], help="NAME=FILE: JSON that run wrote")
    parser.add_argument("--ours", default=None, help="the --per-datapoint JSON of guides_mnist.py")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from pyrovae.evaluation.compare import paired_difference

    if args.write_data:
        from pyrovae.data.datasets import load_dataset

        suite = load_dataset("mnist", data_dir=DATA)
        train_x = _idx("train-images-idx3-ubyte.gz")
        if not np.allclose(train_x[:len(suite.train["x"])].reshape(len(suite.train["x"]), -1) / 255.0,
                           suite.train["x"].numpy()):
            sys.exit("the IDX training images are not the suite's training split")
        np.savez_compressed(args.write_data, train_x=train_x, train_y=_idx("train-labels-idx1-ubyte.gz"),
                            test_x=suite.test["x"][:args.num_test].numpy().astype(np.uint8),
                            test_y=suite.test["y"][:args.num_test].numpy())
        return
    reference = {}
    for item in args.reference:
        name, _, path = item.partition("=")
        with open(path) as f:
            reference[name] = json.load(f)
    ours = {}
    if args.ours:
        with open(args.ours) as f:
            ours = {k: v for k, v in json.load(f).items() if v is not None}

    def level(values):
        return [float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values)))]

    out = {"reference": {n: {k: v for k, v in r.items() if k != "per_image"} for n, r in reference.items()},
           "ours": {n: {"log_px": level(v), "test_images": len(v)} for n, v in ours.items()}, "paired": {}}
    for a, ref in reference.items():
        for b, values in ours.items():
            n = len(ref["per_image"])
            if len(values) < n:
                sys.exit("ours %s scored %d test images, the reference %d" % (b, len(values), n))
            if len(values) > n:  # the same images first: pair on the reference's
                out["ours"]["%s, first %d" % (b, n)] = {"log_px": level(values[:n]), "test_images": n}
            d = paired_difference(values[:n], ref["per_image"])
            out["paired"]["%s - %s" % (b, a)] = {"mean": d.mean, "stderr": d.stderr}
            print("paired, ours %s - reference %s: %+.2f +- %.2f nats" % (b, a, d.mean, d.stderr))
    print(json.dumps({k: v for k, v in out.items() if k != "paired"}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "compare"):
        sys.exit(__doc__)
    (run if sys.argv[1] == "run" else compare)(sys.argv[2:])
