"""Where the time and the memory of a training step go, for ``pyrovae bench --profile
--memory --eval``.

- :func:`profile_pieces`: the pieces of one step (diag guide, elbo), each timed on its own
  (process CPU time per step on a CPU, best of several repeats), and the suite's step by
  package (cProfile's self time, grouped);
- :func:`memory_table`: the peak memory of one IWAE step for K = 5, 50, 5000, with and
  without particle chunks; on a CPU each runs in a fresh process (``python -m pyrovae.bench.command
  --memory-child ...``) and reports the growth of its resident set, with glibc's mmap
  threshold fixed so that freed tensors leave the resident set; on a GPU
  ``torch.cuda.max_memory_allocated``;
- :func:`eval_timing`: seconds of ``log_likelihood`` with K importance samples.

>>> _package("/x/site-packages/pyro/poutine/runtime.py", "apply_stack")
'pyro.poutine'
"""

from __future__ import annotations

import cProfile
import json
import math
import os
import pstats
import resource
import subprocess
import sys
import time
from collections import defaultdict
from typing import List

import pyro
import torch

from pyrovae.bench.runners import X_DIM, Batches, PlainRunner, SuiteRunner, bench_objective, make_pair, sync
from pyrovae.infer.fast_path import quiet_pyro_modules
from pyrovae.training.step import make_optimizer


def profile_pieces(device, batch_size=100, repeats=5, steps=100, lr=1e-3) -> dict:
    """The pieces of one step (diag guide, elbo), each timed on its own (CPU time per step,
    best of ``repeats``), and the suite step's time by package (cProfile)."""
    from pyro.infer import Trace_ELBO

    from pyrovae.infer.fast_path import trace_elbo_loss

    model, guide, plain = make_pair("diag", device)
    x = torch.rand(10_000, X_DIM, generator=torch.Generator().manual_seed(1)).to(device)
    feed = Batches(x, batch_size)
    batch = feed()
    quiet = quiet_pyro_modules(model, guide)
    params = list(model.parameters()) + list(guide.parameters())
    for p in params + list(plain.parameters()):
        p.grad = torch.zeros_like(p)
    default_adam = torch.optim.Adam(params, lr=lr)
    fused_adam = make_optimizer(params, lr, device)
    n = batch["x"].shape[0]

    def quiet_lean():
        with quiet:
            return trace_elbo_loss(model, guide, batch) / n

    pieces = {
        "data: gather + binarize (rand < p)": feed,
        "data: torch.bernoulli (what DataSet.transform runs)": lambda: torch.bernoulli(batch["x"]),
        "plain: forward": lambda: plain.loss(batch["x"]),
        "plain: forward + backward": lambda: plain.loss(batch["x"]).backward(),
        "Pyro Trace_ELBO: forward": lambda: Trace_ELBO().differentiable_loss(model, guide, **batch) / n,
        "Pyro Trace_ELBO + validation: forward": None,
        "lean ELBO: forward": lambda: trace_elbo_loss(model, guide, batch) / n,
        "lean ELBO + quiet modules: forward": quiet_lean,
        "lean ELBO + quiet modules: forward + backward": lambda: quiet_lean().backward(),
        "Pyro Trace_ELBO: forward + backward": lambda: (Trace_ELBO().differentiable_loss(model, guide, **batch) / n).backward(),
        "torch.optim.Adam (defaults)": default_adam.step,
        "Adam, fused": fused_adam.step,
    }
    out = {}
    for name, fn in pieces.items():
        validation = fn is None
        fn = fn or pieces["Pyro Trace_ELBO: forward"]
        best = math.inf
        with pyro.validation_enabled(validation):
            for _ in range(repeats):
                sync(device)
                c0 = time.process_time() if device.type == "cpu" else time.perf_counter()
                for _ in range(steps):
                    fn()
                sync(device)
                best = min(best, ((time.process_time() if device.type == "cpu" else time.perf_counter()) - c0) / steps)
        out[name] = 1000 * best
    # the whole suite step, by package
    runner = SuiteRunner(model, guide, bench_objective("elbo"), device, lr)
    profiler = cProfile.Profile()
    with pyro.validation_enabled(False):
        for _ in range(10):
            runner(feed())
        profiler.enable()
        for _ in range(steps):
            runner(feed())
        profiler.disable()
    by_package = defaultdict(float)
    for (filename, _, function), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():
        by_package[_package(filename, function)] += 1000 * tottime / steps
    return {"pieces ms": out, "suite step by package ms (cProfile, inflated)": dict(
        sorted(by_package.items(), key=lambda item: -item[1]))}


def _package(filename: str, function: str) -> str:
    if filename == "~":
        return "torch kernels (C++)" if "torch" in function or "method" in function else "builtins"
    for key in ("pyro/poutine", "pyro/distributions", "pyro/nn", "pyro/infer", "torch/distributions",
                "torch/nn", "torch/optim", "torch/autograd", "pyrovae"):
        if key in filename:
            return key.replace("/", ".")
    return "pyro (other)" if "/pyro/" in filename else "torch (other)" if "/torch/" in filename else "other"


# ---------------------------------------------------------------- memory and evaluation


def memory_child(device: str, guide_name: str, objective_name: str, batch_size: int, particle_chunk: int,
                 variant: str) -> dict:
    """Peak memory of one training step (run in a fresh process on a CPU)."""
    device = torch.device(device)
    model, guide, plain = make_pair(guide_name, device)
    x = torch.rand(batch_size, X_DIM, generator=torch.Generator().manual_seed(1)).to(device)
    batch = {"x": torch.bernoulli(x)}
    objective = bench_objective(objective_name, particle_chunk)
    if variant == "suite":
        step = SuiteRunner(model, guide, objective, device, 1e-3, batch_size=batch_size)
    else:
        step = PlainRunner(plain, objective_name, device, 1e-3)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    with pyro.validation_enabled(False):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak MB": peak / 2 ** 20}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_table(device, batch_size=20, chunk=100) -> List[dict]:
    rows = []
    for k, c, variant in [(5, 0, "suite"), (5, 0, "plain"), (50, 0, "suite"), (50, 0, "plain"),
                          (5000, 0, "suite"), (5000, 0, "plain"), (5000, chunk, "suite"), (50, 10, "suite")]:
        args = [str(device), "diag", f"iwae{k}", str(batch_size), str(c), variant]
        if device.type == "cpu":  # a fresh process: the resident-set high-water mark is this step's;
            # large blocks mmapped, so that freed tensors leave the resident set (glibc keeps them otherwise)
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            out = subprocess.run([sys.executable, "-m", "pyrovae.bench.command", "--memory-child", *args],
                                 capture_output=True, text=True, check=True, env=env)
            result = json.loads(out.stdout.strip().splitlines()[-1])
        else:
            result = memory_child(*args[:3], int(args[3]), int(args[4]), args[5])
        rows.append({"K": k, "particle_chunk": c or None, "variant": variant, "batch_size": batch_size, **result})
    return rows


def eval_timing(device, num_images=100, num_samples=5000, data_dir=None) -> dict:
    """Seconds of ``log_likelihood`` with K = ``num_samples`` over ``num_images`` test images
    (MNIST's when found), and the same extrapolated to MNIST's 10,000."""
    from pyrovae import log_likelihood

    model, guide, _ = make_pair("diag", device)
    try:
        from pyrovae.data.datasets import load_dataset

        x = load_dataset("mnist", data_dir=data_dir).test["x"][:num_images].to(device)
        source = "MNIST test images"
    except Exception:  # noqa: BLE001 - no data files: synthetic binary images
        x = torch.bernoulli(torch.rand(num_images, X_DIM, generator=torch.Generator().manual_seed(2))).to(device)
        source = "synthetic binary images"
    log_likelihood(model, guide, x[:2], num_samples=10)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    est = log_likelihood(model, guide, x, num_samples=num_samples)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"device": str(device), "images": num_images, "num_samples": num_samples, "data": source,
            "seconds": seconds, "seconds for 10000 images (extrapolated)": seconds * 10_000 / num_images,
            "log_likelihood (untrained)": est.log_likelihood}
