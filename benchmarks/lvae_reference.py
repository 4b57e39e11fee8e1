# -*- coding: utf-8 -*-
"""Run Sønderby et al.'s own Ladder VAE code (casperkaae/LVAE, ``run_models.py`` unchanged;
Theano + Lasagne + Parmesan) on local data, and pair its test log-likelihood per image with the
suite's Ladder VAE (``benchmarks/hierarchical_mnist.py``) on the same test images: the reference
of docs/hierarchical.md ("against the authors' Ladder VAE code at equal budget"). Not a test.

Two parts, two Pythons; this file parses in both.

``run`` (Python 2.7: Theano 1.0.5, Lasagne 0.2.dev1 and Parmesan 0.1.dev1 from their
repositories). ``run_models.py -dataset mnistresample`` reads MNIST with Parmesan's
``load_mnist_realval``, which downloads a pickle of grey levels and is the one thing this script
replaces: its training images are the first ``--train-size`` of the local IDX training file (the
suite's training split; grey levels in [0, 1], which the reference binarizes afresh each epoch,
as ours does), its validation set is empty (the reference appends it to the training set), and its
test images are the suite's binarized test images (``--test-npy``, written by ``compare
--write-test``; the reference's own ``np.random.binomial`` redraw of a {0, 1} pixel is that pixel,
so it scores exactly these images). The script seeds NumPy (``--seed``; the reference sets no seed,
and its weights and Theano random streams draw from NumPy), and wraps ``theano.function`` to read
what the reference computes but does not keep: the first output (its importance-weighted bound)
of each call with 5000 importance samples, one per test image with ``-batch_size_test 1``, put
back in the order of ``--test-npy`` (the reference shuffles its test set), and the process CPU
time spent in its training steps. Everything else (networks, batch normalisation and its
statistics collected on the training set, the warm-up ``-temp_start 0 -temp_epochs N``, Adam with
its gradient clipping, the loop) is the reference's own code, run with its command-line flags.

``compare`` (this repository's venv): ``--write-test FILE`` saves the suite's first ``--num-test``
binarized test images for ``run``; then, given the JSON ``run`` wrote for each reference model and
the ``.partial`` file of ``benchmarks/hierarchical_mnist.py --json`` on the same test images, it
prints the per-image paired differences (ours - reference, and the ladder - the two-layer bottom-up
model within each) and writes them as JSON.

Setup, in a scratch folder outside this repository:

    git --git-dir=LVAE/.git archive 066858a | tar -x -C lvae           # run_models.py, helpers.py
    python2.7 -m pip install --target py2lib numpy==1.16.6 scipy==1.2.3 theano==1.0.5 six \\
        matplotlib==2.2.5 scikit-learn==0.20.4            # run_models.py imports the last two
    python2.7 -m pip install --no-deps --target py2extra ./Lasagne ./parmesan   # 5d3c63c, 8677668
    PYTHONPATH=py2lib:py2extra THEANO_FLAGS=floatX=float32 OMP_NUM_THREADS=1 \\
        python2.7 lvae_reference.py run --code lvae --train-size 10000 --test-npy test_1000.npy \\
        --seed 0 --save ref_ladder.json -- -modeltype ladderVAE -dataset mnistresample ...
"""
from __future__ import division, print_function

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

DATA = os.environ.get("PYROVAE_DATA", ".")


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


def run(argv):
    parser = argparse.ArgumentParser(prog="lvae_reference.py run")
    parser.add_argument("--code", required=True, help="the folder holding run_models.py and helpers.py")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--test-npy", required=True, help="binary test images (N, 784), from compare --write-test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", required=True, help="JSON: per-image log p(x) (its 5000-sample bound) and times")
    parser.add_argument("reference_args", nargs=argparse.REMAINDER, help="-- then run_models.py's flags")
    args = parser.parse_args(argv)
    reference_args = [a for a in args.reference_args if a != "--"]

    import runpy
    import theano
    import parmesan.datasets

    train_x = (_idx("train-images-idx3-ubyte.gz")[:args.train_size].reshape(-1, 784) / 255.0).astype("float32")
    train_t = _idx("train-labels-idx1-ubyte.gz")[:args.train_size].astype("int64")
    test_x = np.load(args.test_npy).astype("float32")
    test_t = _idx("t10k-labels-idx1-ubyte.gz")[:len(test_x)].astype("int64")
    if not np.all((test_x == 0) | (test_x == 1)):
        sys.exit("--test-npy must hold binary images")

    def load_mnist_realval(dataset=None):
        empty_x, empty_t = np.zeros((0, 784), "float32"), np.zeros((0,), "int64")
        return train_x, train_t, empty_x, empty_t, test_x.copy(), test_t.copy()

    parmesan.datasets.load_mnist_realval = load_mnist_realval

    bounds, train_cpu = [], [0.0]
    compile_function = theano.function

    def function(*fargs, **fkwargs):
        compiled = compile_function(*fargs, **fkwargs)

        def call(*cargs):
            t0 = _cpu()
            out = compiled(*cargs)
            if len(cargs) == 5:  # train_model(x, lr, eq_samples, iw_samples, temp): one step
                train_cpu[0] += _cpu() - t0
            elif len(cargs) == 3 and int(cargs[2]) == 5000:  # test_model5000(x, eq_samples, iw_samples)
                bounds.append(float(out[0]))
            return out

        return call

    theano.function = function
    np.random.seed(args.seed)
    sys.path.insert(0, os.path.abspath(args.code))
    sys.argv = [os.path.join(os.path.abspath(args.code), "run_models.py")] + reference_args
    cpu0, wall0 = _cpu(), time.time()
    namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    cpu, wall = _cpu() - cpu0, time.time() - wall0
    if len(bounds) != len(test_x):
        sys.exit("expected one 5000-sample bound per test image (pass -batch_size_test 1 and -eval_epochs "
                 "with the last epoch only); got %d for %d images" % (len(bounds), len(test_x)))
    per_image = np.empty(len(test_x))
    per_image[namespace["idx"]] = bounds  # the reference scored test_x[idx]
    epochs = namespace["num_epochs"]
    out = {"reference_args": reference_args, "train_size": args.train_size, "seed": args.seed,
           "test_images": len(test_x), "K": 5000, "per_image": per_image.tolist(),
           "log_px": [float(per_image.mean()), float(per_image.std(ddof=1) / np.sqrt(len(per_image)))],
           "train_cpu_s": train_cpu[0], "train_cpu_s_per_epoch": train_cpu[0] / epochs, "cpu_s": cpu, "wall_s": wall}
    print("RESULT %s: log p(x) %.2f +- %.2f (K=5000, %d test images), %.1f CPU s/epoch of training"
          % (namespace["modeltype"], out["log_px"][0], out["log_px"][1], len(test_x), out["train_cpu_s_per_epoch"]))
    with open(args.save, "w") as f:
        json.dump(out, f)


def compare(argv):
    parser = argparse.ArgumentParser(prog="lvae_reference.py compare")
    parser.add_argument("--write-test", default=None, help="save the first --num-test binarized test images here")
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--reference", nargs="*", default=[], help="NAME=FILE: JSON that run wrote")
    parser.add_argument("--ours", default=None, help="the .partial file of hierarchical_mnist.py --json")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from pyrovae.data.datasets import load_dataset
    from pyrovae.evaluation.compare import paired_difference

    if args.write_test:
        np.save(args.write_test, load_dataset("mnist").test["x"][:args.num_test].numpy())
        return
    reference = {}
    for item in args.reference:
        name, _, path = item.partition("=")
        with open(path) as f:
            reference[name] = json.load(f)
    ours = {}
    if args.ours:
        with open(args.ours) as f:
            for line in f:
                row = json.loads(line)
                ours[row["model"]] = row
    out = {"reference": {n: {k: v for k, v in r.items() if k != "per_image"} for n, r in reference.items()},
           "ours": {n: {"log_px": [float(np.mean(r["per_datapoint"])),
                                   float(np.std(r["per_datapoint"], ddof=1) / np.sqrt(len(r["per_datapoint"])))],
                        "train_s": r["train_s"]} for n, r in ours.items()},
           "paired": {}}
    names = [(n, reference[n]["per_image"]) for n in reference] + [(n, ours[n]["per_datapoint"]) for n in ours]
    for i, (a, xa) in enumerate(names):
        for b, xb in names[i + 1:]:
            d = paired_difference(xb, xa)
            out["paired"]["%s - %s" % (b, a)] = {"mean": d.mean, "stderr": d.stderr}
            print("paired, %s - %s: %+.2f +- %.2f nats" % (b, a, d.mean, d.stderr))
    print(json.dumps({k: v for k, v in out.items() if k != "paired"}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "compare"):
        sys.exit(__doc__)
    (run if sys.argv[1] == "run" else compare)(sys.argv[2:])
