"""``pyrovae bench``: the suite's training step against a hand-written PyTorch step, in one run.

For each device (CPU, and CUDA where present), pair (the VAE with the ``diag`` or ``iaf``
guide, and ``user``: a user's pair written as plain Pyro functions, ``pyro.module`` in model
and guide, around the ``diag`` networks), objective (``elbo``, ``meanfield``, ``iwae`` with
K = 5 and 50) and batch size (100, 1000), the same networks with the same initial weights
are trained by

- **suite**: what :func:`pyrovae.fit` runs per batch, built by fit's own set-up
  (:class:`~pyrovae.training.step.TrainStep`: the objective on the Pyro model and guide, fused
  Adam, quiet PyroModules and ``pyro.module`` statements; on a GPU inside a CUDA graph,
  :class:`~pyrovae.training.cuda_graph.GraphedStep`; on a CPU its forward pass recorded and
  replayed, :class:`~pyrovae.training.replay.ReplayedStep`), plus its per-step bookkeeping;
- **plain**: the hand-written step of :mod:`pyrovae.bench.reference` with the *same* optimizer;
- **plain, default Adam**: the same with ``torch.optim.Adam(params, lr)``, as one writes it;
- **suite, eager**: the same step run eagerly (no CUDA graph, no replay), as ``--no-replay``;
- with ``--compile``, on a CPU, also **suite, compiled**: fit's step with ``compile=True`` (the
  pair's networks compiled by ``torch.compile``), its ratio to the eager suite step and the
  seconds its compilation took; a pair that cannot be compiled is refused in one line.

All variants draw their batches the same way (data resident on the device, a gather by a
random permutation, dynamic binarization as ``rand < p``) and run in alternating blocks of steps, so
background load hits each alike; the table gives the median milliseconds per step over the
blocks, the ratios suite / plain, the process CPU time per step (less sensitive to other
processes on a CPU), and peak memory (``torch.cuda.max_memory_allocated`` on a GPU). Optional
sections (:mod:`pyrovae.bench.profile`): ``--profile`` (where the suite's extra time goes, piece by piece and by package),
``--memory`` (peak memory of one IWAE step for K = 5, 50, 5000 with and without particle
chunks, each in a fresh process: the resident-set high-water mark on a CPU, with glibc's
mmap threshold fixed so that freed tensors leave the resident set), ``--eval``
(importance-sampled log-likelihood seconds).

    pyrovae bench                          # the full table on every device present
    pyrovae bench --quick --profile        # fewer configurations, plus the profile
    pyrovae bench --memory --eval --json bench.json

Timings are not tests: the numbers depend on the machine and its load. The data are
synthetic grey images of MNIST's size (timings do not depend on the pixels).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from typing import List

import pyro
import torch

from pyrovae.errors import UsageError
from pyrovae.bench.profile import eval_timing, memory_child, memory_table, profile_pieces
from pyrovae.bench.runners import (  # noqa: F401  (X_DIM, Z_DIM, HIDDEN: the bench pair's sizes, for the CLI)
    HIDDEN, OBJECTIVES, PAIRS, X_DIM, Z_DIM, Batches, PlainRunner, SuiteRunner, bench_objective, make_pair, sync,
)

def time_config(device, guide_name, objective_name, batch_size, *, blocks, block_seconds, lr=1e-3,
                precision="fp32", data=None, compile=False) -> dict:
    """Median ms/step (wall and CPU) of each variant over alternating blocks of steps; with
    ``compile`` (CPU) also the suite's step with the networks compiled."""
    model, guide, plain = make_pair(guide_name, device)
    x = data if data is not None else torch.rand(10_000, X_DIM, generator=torch.Generator().manual_seed(1)).to(device)
    runners = {"suite": SuiteRunner(model, guide, bench_objective(objective_name), device, lr,
                                    graphs=device.type == "cuda", precision=precision),
               "plain": PlainRunner(plain, objective_name, device, lr, precision=precision)}
    plain_default = copy.deepcopy(plain)  # an untrained copy: the same starting point
    runners["plain, default Adam"] = PlainRunner(plain_default, objective_name, device, lr, default_adam=True,
                                                 precision=precision)
    eager_model, eager_guide, _ = make_pair(guide_name, device, tag="-eager")
    runners["suite, eager"] = SuiteRunner(eager_model, eager_guide, bench_objective(objective_name), device, lr,
                                          precision=precision, replay=False)
    refused, compile_seconds = None, None
    if compile and device.type == "cpu":
        compiled_model, compiled_guide, _ = make_pair(guide_name, device, tag="-compiled")
        t0 = time.perf_counter()
        try:
            runners["suite, compiled"] = SuiteRunner(compiled_model, compiled_guide, bench_objective(objective_name),
                                                     device, lr, precision=precision, batch_size=batch_size,
                                                     compile=True)
        except UsageError as error:
            refused = str(error)
            print(f"  {guide_name} {objective_name}: {refused}", file=sys.stderr)
    feeds = {name: Batches(x, batch_size) for name in runners}
    with pyro.validation_enabled(False):
        for name, runner in runners.items():  # warm-up (and the CUDA graph capture, the compilation)
            for _ in range(6):
                runner(feeds[name]())
            if name == "suite, compiled":
                compile_seconds = time.perf_counter() - t0
        sync(device)
        t0 = time.perf_counter()
        for _ in range(2):
            runners["suite"](feeds["suite"]())
        sync(device)
        steps = max(1, min(50, round(block_seconds / max((time.perf_counter() - t0) / 2, 1e-6))))
        wall, cpu, peak = defaultdict(list), defaultdict(list), {}
        names = list(runners)
        for block in range(blocks):
            for name in names[block % len(names):] + names[:block % len(names)]:  # rotate the order
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    runners[name](feeds[name]())
                sync(device)
                wall[name].append(1000 * (time.perf_counter() - w0) / steps)
                cpu[name].append(1000 * (time.process_time() - c0) / steps)
                if device.type == "cuda":
                    peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device))
    row = {"device": str(device), "guide": guide_name, "objective": objective_name, "batch_size": batch_size,
           "steps_per_block": steps, "blocks": blocks}
    for name in runners:
        row[f"{name} ms"] = statistics.median(wall[name])
        row[f"{name} cpu ms"] = statistics.median(cpu[name])
        if name in peak:
            row[f"{name} peak MB"] = peak[name] / 2 ** 20
    row["ratio"] = row["suite ms"] / row["plain ms"]
    row["ratio vs default Adam"] = row["suite ms"] / row["plain, default Adam ms"]
    row["cpu ratio"] = row["suite cpu ms"] / row["plain cpu ms"]
    # the noise: the ratio in each block (suite and plain run next to each other in a block)
    per_block = [a / b for a, b in zip(wall["suite"], wall["plain"])]
    per_block_cpu = [a / b for a, b in zip(cpu["suite"], cpu["plain"])]
    row["ratio range"] = [min(per_block), max(per_block)]
    row["cpu ratio range"] = [min(per_block_cpu), max(per_block_cpu)]
    if "suite, compiled ms" in row:
        row["compiled/eager"] = row["suite, compiled ms"] / row["suite, eager ms"]
        row["compiled/eager cpu"] = row["suite, compiled cpu ms"] / row["suite, eager cpu ms"]
        row["compile seconds"] = compile_seconds
    elif refused is not None:
        row["compile refused"] = refused
    row["replays"] = runners["suite"].run.replays  # CUDA graph or CPU replay: 0 where the step ran eagerly
    row["ratio eager"] = row["suite, eager ms"] / row["plain ms"]
    row["cpu ratio eager"] = row["suite, eager cpu ms"] / row["plain cpu ms"]
    return row


# ---------------------------------------------------------------- the command


def _print_table(rows: List[dict]) -> None:
    cuda = any(r["device"].startswith("cuda") for r in rows)
    compiled = any("compiled/eager" in r or "compile refused" in r for r in rows)
    head = ["device", "guide", "objective", "B", "suite ms", "plain ms", "ratio", "plain default-Adam ms",
            "ratio vs default", "cpu ratio", "suite eager ms", "eager ratio", "eager cpu ratio", "replayed"] \
        + (["peak MB suite/plain"] if cuda else []) \
        + (["compiled ms", "compiled/eager", "compiled/eager cpu", "compile s"] if compiled else [])
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["device"], r["guide"], r["objective"], r["batch_size"], f"{r['suite ms']:.2f}",
                 f"{r['plain ms']:.2f}", f"{r['ratio']:.3f}", f"{r['plain, default Adam ms']:.2f}",
                 f"{r['ratio vs default Adam']:.3f}", f"{r['cpu ratio']:.3f}", f"{r['suite, eager ms']:.2f}",
                 f"{r['ratio eager']:.3f}", f"{r['cpu ratio eager']:.3f}", "yes" if r["replays"] else "no"]
        if cuda:
            cells += [f"{r.get('suite peak MB', float('nan')):.0f}/{r.get('plain peak MB', float('nan')):.0f}"]
        if compiled:
            cells += ([f"{r['suite, compiled ms']:.2f}", f"{r['compiled/eager']:.3f}", f"{r['compiled/eager cpu']:.3f}",
                       f"{r['compile seconds']:.0f}"] if "compiled/eager" in r else ["refused", "", "", ""])
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pyrovae bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", nargs="*", default=None, help="devices (default: cpu, and cuda where present)")
    p.add_argument("--guides", nargs="*", default=list(PAIRS), choices=PAIRS, metavar="PAIR",
                   help="pairs: the VAE with the diag or iaf guide, or user (a user's plain-function pair "
                        "with the diag networks, pyro.module in model and guide); default all three")
    p.add_argument("--objectives", nargs="*", default=list(OBJECTIVES))
    p.add_argument("--batch-sizes", nargs="*", type=int, default=[100, 1000])
    p.add_argument("--blocks", type=int, default=5, help="alternating timed blocks per variant")
    p.add_argument("--block-seconds", type=float, default=0.5, help="about this long per block")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see docs/cli.md)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--quick", action="store_true", help="diag and user only, elbo and iwae5, batch 100")
    p.add_argument("--compile", action="store_true",
                   help="CPU: also the suite's step with the networks compiled (torch.compile; needs g++), "
                        "against eager in the same blocks (with --model: each model's, as fit --compile builds it)")
    p.add_argument("--profile", action="store_true", help="where the suite's extra time goes")
    p.add_argument("--memory", action="store_true", help="peak memory of IWAE steps, K = 5, 50, 5000")
    p.add_argument("--eval", action="store_true", help="time log_likelihood with K = --eval-samples")
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--data-dir", default=None, help="MNIST for --eval (else synthetic images)")
    p.add_argument("--no-table", action="store_true", help="skip the ratio table")
    p.add_argument("--json", default=None, help="also write every result to this file")
    p.add_argument("--memory-child", nargs=6, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", nargs="+", default=None, metavar="M",
                   help="registered models (or all) instead of the pair table: each one's step on a fixed batch of "
                        "its own data (--profile: split into networks, densities, draws, Pyro, backward, optimizer, "
                        "bookkeeping) and its evaluation's ms per datapoint at K = --model-eval-samples")
    p.add_argument("--model-batch-size", type=int, default=100, help="--model: rows in the fixed batch (default 100)")
    p.add_argument("--model-eval-samples", type=int, default=100, help="--model: K of the evaluation (0: skip)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        return model_rows(args)
    if args.memory_child:
        device, guide, objective, batch, chunk, variant = args.memory_child
        print(json.dumps(memory_child(device, guide, objective, int(batch), int(chunk), variant)))
        return 0
    devices = [torch.device(d) for d in (args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))]
    if args.quick:
        args.guides, args.objectives, args.batch_sizes = ["diag", "user"], ["elbo", "iwae5"], [100]
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}, pyro {pyro.__version__}"
               + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    results = {"machine": machine, "threads": torch.get_num_threads(), "precision": args.precision, "table": []}
    print(f"# pyrovae bench ({machine}; precision {args.precision}; median of {args.blocks} interleaved blocks)")
    if not args.no_table:
        for device in devices:
            for guide in args.guides:
                for objective in args.objectives:
                    for batch_size in args.batch_sizes:
                        row = time_config(device, guide, objective, batch_size, blocks=args.blocks,
                                          block_seconds=args.block_seconds, precision=args.precision,
                                          compile=args.compile)
                        results["table"].append(row)
                        print(f"  {device} {guide} {objective} B={batch_size}: suite {row['suite ms']:.2f} ms, "
                              f"plain {row['plain ms']:.2f} ms, ratio {row['ratio']:.3f} (blocks "
                              f"{row['ratio range'][0]:.3f}-{row['ratio range'][1]:.3f}), cpu ratio "
                              f"{row['cpu ratio']:.3f} ({row['cpu ratio range'][0]:.3f}-{row['cpu ratio range'][1]:.3f})",
                              file=sys.stderr, flush=True)
        _print_table(results["table"])
    if args.profile:
        for device in devices:
            results[f"profile {device}"] = prof = profile_pieces(device)
            print(f"\n## where the time goes ({device}, diag guide, elbo, batch 100; ms per step)")
            for name, ms in prof["pieces ms"].items():
                print(f"  {name:48s} {ms:7.3f}")
            print("  suite step by package (cProfile tottime; the profiler inflates Python):")
            for name, ms in prof["suite step by package ms (cProfile, inflated)"].items():
                print(f"    {name:28s} {ms:7.3f}")
    if args.memory:
        for device in devices:
            rows = results[f"memory {device}"] = memory_table(device)
            print(f"\n## peak memory of one IWAE training step ({device}, diag guide, batch {rows[0]['batch_size']})")
            for r in rows:
                print(f"  K={r['K']:5d} chunk={str(r['particle_chunk']):5s} {r['variant']:6s} {r['peak MB']:9.1f} MB")
    if args.eval:
        for device in devices:
            results[f"eval {device}"] = ev = eval_timing(device, args.eval_images, args.eval_samples, args.data_dir)
            print(f"\n## log_likelihood, K={ev['num_samples']}, {ev['images']} {ev['data']} on {device}: "
                  f"{ev['seconds']:.1f} s; 10,000 images: {ev['seconds for 10000 images (extrapolated)']:.0f} s "
                  "(extrapolated)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


def model_rows(args) -> int:
    """``pyrovae bench --model M ...``: the models table (:mod:`pyrovae.bench.models`)."""
    from pyrovae.bench.models import all_model_names, bench_model, check_model_names, format_table

    problem = check_model_names(args.model)
    if problem:
        print(f"pyrovae bench: {problem}", file=sys.stderr)
        return 2
    names = all_model_names() if "all" in args.model else args.model
    device = torch.device((args.device or ["cpu"])[0])
    print(f"# pyrovae bench --model ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, pyro {pyro.__version__}, {device}; ms of process CPU time on a CPU)")
    rows = []
    for name in names:
        rows.append(bench_model(name, args.model_batch_size, args.data_dir, device, profile=args.profile,
                                eval_samples=args.model_eval_samples, seconds=args.block_seconds,
                                blocks=args.blocks, compile=args.compile))
        print(f"  {name}: step {rows[-1]['step ms']:.1f} ms", file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "device": str(device), "models": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
