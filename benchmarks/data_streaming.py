"""Streamed data against the on-device path, in one run; peak memory while streaming a big array.

1. Seconds per epoch of MNIST (50,000 training rows, binarized once, batch 128) through
   ``pyrovae.fit`` (a VAE 784-200-20 with a Bernoulli likelihood and its diagonal Gaussian
   guide, objective elbo, no validation pass): the rows as a tensor held on the device; a
   user's ``DataLoader(shuffle=True)`` over a map-style Dataset with 0 and with 2 workers;
   the Dataset streamed by pyrovae itself (``max_bytes=0``, 2 workers). Every path starts from
   the same initial weights; the paths are interleaved round by round, and each round times
   one epoch of each (``metrics[-1]["seconds"]``: the loop, not the set-up).
2. Peak resident memory (VmHWM) of a fresh process that streams a memory-mapped float32
   ``.npy`` of ``--gigabytes`` GB made in /tmp (deleted afterwards): ``load_data_path`` (the
   NaN scan included), one shuffled pass of ``as_source(max_bytes=0)`` over the three splits,
   then one epoch of ``pyrovae.fit`` streamed from it (batch 1024, validation included).

    OMP_NUM_THREADS=1 PYROVAE_DATA=../shared/data python benchmarks/data_streaming.py --rounds 3

Not a test: timings are noisy; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyro
import torch
import _harness  # benchmarks/_harness.py
from torch.utils.data import DataLoader

from pyrovae import fit
from pyrovae.data import as_source, load_data_path, load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE


class Rows(torch.utils.data.Dataset):
    """A user's map-style Dataset: one row of a tensor per item."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def fit_epoch_seconds(data, initial, **options) -> float:
    """One epoch of ``pyrovae.fit`` from the pair ``initial``; the loop's seconds."""
    model, guide = copy.deepcopy(initial)
    result = fit(model, guide, data, epochs=1, batch_size=options.pop("batch_size"), seed=0, progress=False,
                 figures=False, **options)
    return result.metrics[-1]["seconds"], result.data_mode


def compare_epochs(rounds: int, batch_size: int):
    train = load_dataset("mnist", binarize="none").train
    x = (torch.rand(train["x"].shape, generator=torch.Generator().manual_seed(0)) < train["x"]).float()
    loader = lambda workers: DataLoader(Rows(x), batch_size=batch_size, shuffle=True, num_workers=workers,
                                        generator=torch.Generator().manual_seed(0))
    paths = {"on-device (a tensor)": lambda: (x, {}),
             "DataLoader, 0 workers": lambda: (loader(0), {}),
             "DataLoader, 2 workers": lambda: (loader(2), {}),
             "Dataset streamed by pyrovae, 2 workers": lambda: (Rows(x), {"max_bytes": 0, "num_workers": 2})}
    pyro.set_rng_seed(0)
    initial = (VAE(784, 20, (200,)), DiagNormalGuide(784, 20, (200,)))
    times, modes = {name: [] for name in paths}, {}
    for _ in range(rounds):
        for name, make in paths.items():
            data, options = make()
            seconds, modes[name] = fit_epoch_seconds(data, initial, batch_size=batch_size, **options)
            times[name].append(seconds)
    reference = min(times["on-device (a tensor)"])
    print(f"MNIST train ({len(x)} rows), batch {batch_size}, pyrovae.fit VAE 784-200-20, {rounds} interleaved "
          f"rounds of one epoch, {torch.get_num_threads()} torch thread(s)")
    for name, values in times.items():
        print(f"  {name:40s} {min(values):6.2f} s/epoch (best; all {[round(v, 2) for v in values]})  "
              f"x{min(values) / reference:.2f} of on-device")
        print(f"    {modes[name]}")


def stream_big_array(path: str, batch_size: int):
    """Run in a fresh process: read, scan and stream the array once; print times and VmHWM."""
    def vm(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status if line.startswith(field))

    baseline = vm("VmRSS:")
    start = time.perf_counter()
    data = load_data_path(path)
    scanned = time.perf_counter()
    after_scan = vm("VmHWM:")
    rows, total = 0, 0.0
    for split in (data.train, data.valid, data.test):
        source = as_source(split, "cpu", max_bytes=0)
        for batch in source.epoch_batches(batch_size, shuffle=True, seed=0, epoch=0):
            rows += len(batch["x"])
            total += float(batch["x"][:, 0].sum())
    streamed = time.perf_counter()
    after_pass = vm("VmHWM:")
    size_mb = os.path.getsize(path) // 2 ** 20
    print(f"  {rows} rows streamed once, shuffled, batch {batch_size}: load + NaN scan {scanned - start:.1f} s, "
          f"pass {streamed - scanned:.1f} s")
    pyro.set_rng_seed(0)
    result = fit(VAE(784, 20, (200,), likelihood="continuous_bernoulli"), DiagNormalGuide(784, 20, (200,)), data,
                 epochs=1, batch_size=batch_size, progress=False, figures=False, max_bytes=0)
    print(f"  one epoch of pyrovae.fit on it: {result.metrics[-1]['seconds']:.1f} s training, "
          f"{result.metrics[-1]['valid_seconds']:.1f} s validation ({result.data_mode})")
    print(f"  peak RSS (VmHWM) {vm('VmHWM:')} MB for a {size_mb} MB file (after the imports {baseline} MB, "
          f"after the NaN scan {after_scan} MB, after the pass {after_pass} MB)")


def make_big_array(path: str, gigabytes: float, x_dim: int = 784):
    rows = int(gigabytes * 1e9 / (4 * x_dim)) + 1
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, x_dim))
    chunk = 16384
    generator = np.random.default_rng(0)
    for begin in range(0, rows, chunk):
        end = min(rows, begin + chunk)
        array[begin:end] = generator.random((end - begin, x_dim), dtype=np.float32)
    array.flush()
    del array
    return rows


def main():
    parser = _harness.parser(__doc__.splitlines()[0], batch_size=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gigabytes", type=float, default=2.2)
    parser.add_argument("--skip-epochs", action="store_true")
    parser.add_argument("--stream", help=argparse.SUPPRESS)  # the child process's file
    args = parser.parse_args()
    if args.stream:
        return stream_big_array(args.stream, 1024)
    if not args.skip_epochs:
        compare_epochs(args.rounds, args.batch_size)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        path = os.path.join(folder, "big.npy")
        start = time.perf_counter()
        rows = make_big_array(path, args.gigabytes)
        print(f"memory-mapped float32 array: {rows} x 784, {os.path.getsize(path) / 1e9:.2f} GB, written in "
              f"{time.perf_counter() - start:.0f} s")
        subprocess.run([sys.executable, __file__, "--stream", path], check=True)
    print("  (the array file is deleted)")


if __name__ == "__main__":
    main()
