"""Streamed data against the on-device path, in one run; peak memory while streaming a big array.

1. Seconds per epoch of MNIST (50,000 training rows, batch 128) through ``as_source``: held on
   the device, streamed from a map-style Dataset through a DataLoader with 0 workers, and with
   2 workers. Every path drives the same small VAE step (784-200-20, Bernoulli, a plain torch
   loop on dynamically binarized batches), from the same initial weights; the paths are
   interleaved round by round and each round times one whole epoch of each.
2. Peak resident memory (VmHWM) of a fresh process that streams one shuffled pass over a
   memory-mapped float32 ``.npy`` of ``--gigabytes`` GB made in /tmp (deleted afterwards),
   read with ``load_data_path`` (the NaN scan included) and ``as_source(max_bytes=0)``.

    OMP_NUM_THREADS=1 PYROVAE_DATA=../shared/data python benchmarks/data_streaming.py --rounds 2

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
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.data import as_source, load_data_path, load_dataset


class Rows(torch.utils.data.Dataset):
    """A user's map-style Dataset: one row of a tensor per item."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


class PlainVAE(nn.Module):
    def __init__(self, x_dim=784, hidden=200, z_dim=20):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def loss(self, x):
        loc, log_scale = self.encoder(x).chunk(2, -1)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        log_px = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (loc ** 2 + (2 * log_scale).exp() - 2 * log_scale - 1).sum(-1)
        return (kl - log_px).mean()


def epoch_seconds(source, vae, optimizer, batch_size, epoch) -> float:
    start = time.perf_counter()
    for batch in source.epoch_batches(batch_size, shuffle=True, seed=0, epoch=epoch):
        x = (torch.rand_like(batch["x"]) < batch["x"]).float()  # dynamic binarization
        loss = vae.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def compare_epochs(rounds: int, batch_size: int):
    train = load_dataset("mnist").train
    sources = {"on-device": as_source(train, "cpu"),
               "DataLoader, 0 workers": as_source(Rows(train["x"]), "cpu", max_bytes=0),
               "DataLoader, 2 workers": as_source(Rows(train["x"]), "cpu", max_bytes=0, num_workers=2)}
    torch.manual_seed(0)
    initial = PlainVAE()
    pairs = {name: copy.deepcopy(initial) for name in sources}
    optimizers = {name: torch.optim.Adam(vae.parameters(), lr=1e-3) for name, vae in pairs.items()}
    times = {name: [] for name in sources}
    for r in range(rounds):
        for name, source in sources.items():
            times[name].append(epoch_seconds(source, pairs[name], optimizers[name], batch_size, r))
    reference = min(times["on-device"])
    print(f"MNIST train ({len(train['x'])} rows), batch {batch_size}, {rounds} interleaved rounds of one epoch, "
          f"{torch.get_num_threads()} torch thread(s)")
    for name, values in times.items():
        print(f"  {name:24s} {min(values):6.2f} s/epoch (best; all {[round(v, 2) for v in values]})  "
              f"x{min(values) / reference:.2f} of on-device")
    print("  " + sources["DataLoader, 0 workers"].describe())


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
    size_mb = os.path.getsize(path) // 2 ** 20
    print(f"  {rows} rows streamed once, shuffled, batch {batch_size}: load + NaN scan {scanned - start:.1f} s, "
          f"pass {streamed - scanned:.1f} s")
    print(f"  peak RSS (VmHWM) {vm('VmHWM:')} MB for a {size_mb} MB file (after the imports {baseline} MB, "
          f"after the NaN scan {after_scan} MB)")


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
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
