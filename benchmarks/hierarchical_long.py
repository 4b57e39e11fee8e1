"""One stochastic layer against two, trained long: does the hierarchy overtake one layer?

``hierarchical_mnist.py`` compares the pairs after a few thousand steps on a 10,000-image
subset, where the two-layer model is still behind. This script trains ONE pair (``--pair``)
on all 50,000 training images (dynamically binarized MNIST) under Burda et al.'s learning-rate
schedule (stage i = 0, 1, 2, ... lasts 3**i epochs at lr 1e-3 * 10**(-i/7); Adam, batch 100),
as a resumable run folder (``--out``), and every ``--eval-every`` epochs (and at each stage's
end) importance-samples log p(x) on the first ``--num-test`` test images (K = ``--num-samples``),
appending one JSON line per evaluation to ``<out>/evals.jsonl`` with the per-image estimates,
so that two pairs' curves can be compared image by image at the same epoch (``--compare``).

Run each pair in its own process (one thread each), then compare:

    OMP_NUM_THREADS=1 python benchmarks/hierarchical_long.py --pair 1 --out runs/long-1 --hours 2 &
    OMP_NUM_THREADS=1 python benchmarks/hierarchical_long.py --pair 2 --out runs/long-2 --hours 2 &
    wait; python benchmarks/hierarchical_long.py --compare runs/long-1 runs/long-2

``--objective iwae --particles 5`` trains on Burda et al.'s importance-weighted bound instead
(their IWAE rows: two layers ahead of one by 1.65 nats at k = 5, 1.88 at k = 50).

Killing a run and starting the same command again resumes it (the run folder's checkpoint and
the evaluations already logged). ``--hours`` stops at the first evaluation point after that
much wall-clock time (of this process).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.evaluation.compare import paired_difference
from pyrovae.infer.objectives import make_objective
from pyrovae.models.hierarchical import active_units_per_layer

from hierarchical_mnist import build as build_row  # benchmarks/hierarchical_mnist.py

PAIRS = {
    "1": "1 layer: vae + diag, x-200-200-z(50)",
    "2": "2 layers: hvae + hvae (bottom-up), x-200-200-z1(100)-100-100-z2(50)",
    "ladder": "ladder: hvae + ladder, the same generative model",
}


def build(pair: str, x_dim: int, init: str = "torch", train_x=None):
    """The pair of ``hierarchical_mnist.py``'s row of that name (the same architectures)."""
    kind = {"1": "1 layer (vae)", "2": "2 layers (hvae)", "ladder": "ladder (hvae + ladder)"}[pair]
    return build_row(kind, x_dim, None, init, train_x)


def burda_schedule(base_lr: float = 1e-3):
    """``(end_epoch, lr)`` per stage: stage i lasts 3**i epochs at ``base_lr * 10**(-i/7)``
    (Burda et al. 2016, section 5; 3280 epochs over stages 0..7)."""
    end = 0
    for i in range(8):
        end += 3 ** i
        yield end, base_lr * 10 ** (-i / 7)


def plan(eval_every: int):
    """``(end_epoch, lr)`` per training segment: each stage cut at multiples of ``eval_every``."""
    start = 0
    for end, lr in burda_schedule():
        cuts = [e for e in range(start + 1, end) if e % eval_every == 0] + [end]
        for e in cuts:
            yield e, lr
        start = end


def completed_epoch(out: Path) -> int:
    try:
        return json.loads((out / "run.json").read_text())["segments"][-1]["completed_epoch"]
    except (FileNotFoundError, KeyError, IndexError):
        return 0


def train(args):
    out = Path(args.out)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dataset = load_dataset("mnist", data_dir=os.environ.get("PYROVAE_DATA"))  # 50k train, dynamic binarization
    dataset = dataclasses.replace(dataset, valid={k: v[:1000] for k, v in dataset.valid.items()})
    test = {"x": dataset.test["x"][:args.num_test].to(args.device)}
    log = out / "evals.jsonl"
    done = {json.loads(line)["epoch"] for line in log.read_text().splitlines()} if log.exists() else set()
    t_start = time.perf_counter()
    bound = f"iwae, k = {args.particles}" if args.objective == "iwae" else "elbo"
    print(f"{PAIRS[args.pair]}, trained on {bound}, {args.init} initialisation; MNIST 50,000 training images, batch 100, Burda et al.'s lr schedule; "
          f"{torch.get_num_threads()} thread(s), device {args.device}; K={args.num_samples} on the first {args.num_test} test images", flush=True)
    for end, lr in plan(args.eval_every):
        if end <= completed_epoch(out) and end in done:
            continue
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)  # the first segment's initial weights; later ones load the checkpoint
        model, guide = build(args.pair, dataset.x_dim, args.init, dataset.train["x"])  # a resumed run loads its weights
        t0 = time.perf_counter()
        start = completed_epoch(out)
        # an Objective, not a name: a name would take the model's default KL warm-up (hvae's 2500 steps),
        # and the documented runs have none unless --kl-warmup says so
        objective = make_objective(args.objective, warmup_steps=args.kl_warmup,
                                   **({"num_particles": args.particles} if args.objective == "iwae" else {}))
        # keep_best=False: each evaluation is of the weights being trained (the curve), as in the documented
        # runs, which predate fit's keep_best default (a segment would otherwise end on its best epoch's)
        result = fit(model, guide, dataset, objective=objective, epochs=end, batch_size=100, lr=lr, seed=args.seed,
                     out_dir=out, resume=start > 0, progress=False, figures=False, device=args.device,
                     keep_best=False)
        train_s = time.perf_counter() - t0
        model.eval(), guide.eval()
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        est = log_likelihood(model, guide, test, num_samples=args.num_samples)
        eval_s = time.perf_counter() - t0
        pyro.set_rng_seed(args.seed)
        units = active_units_per_layer(guide, test["x"], num_samples=100, relative=True)
        row = {"epoch": end, "lr": lr, "log_likelihood": est.log_likelihood, "stderr": est.stderr, "elbo": est.elbo,
               "valid_elbo": result.metrics[-1].get("valid_elbo"), "relative_active_units": units,
               "seconds_per_epoch": train_s / max(end - start, 1), "eval_seconds": eval_s,
               "per_datapoint": [round(v, 4) for v in est.per_datapoint.tolist()]}
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"epoch {end:5d} lr {lr:.2e}: log p(x) {est.log_likelihood:.2f} ± {est.stderr:.2f}, ELBO {est.elbo:.2f}, "
              f"units {units}, {row['seconds_per_epoch']:.1f} s/epoch, eval {eval_s:.0f} s", flush=True)
        if time.perf_counter() - t_start > args.hours * 3600:
            print(f"stopping after {args.hours} h at epoch {end}; the same command resumes", flush=True)
            break


def compare(folders, figure=None):
    runs = []
    for folder in folders:
        rows = [json.loads(line) for line in (Path(folder) / "evals.jsonl").read_text().splitlines()]
        runs.append((folder, {r["epoch"]: r for r in rows}))
    (a_name, a), (b_name, b) = runs
    print(f"test log p(x), nats (paired on the same test images): {b_name} - {a_name}")
    print(f"{'epoch':>6s} {a_name:>22s} {b_name:>22s} {'paired difference':>20s} {'higher on':>10s}")
    for epoch in sorted(set(a) & set(b)):
        d = paired_difference(b[epoch]["per_datapoint"], a[epoch]["per_datapoint"])
        print(f"{epoch:6d} {a[epoch]['log_likelihood']:13.2f} ± {a[epoch]['stderr']:5.2f} "
              f"{b[epoch]['log_likelihood']:13.2f} ± {b[epoch]['stderr']:5.2f} {d.mean:+12.2f} ± {d.stderr:5.2f} "
              f"{d.fraction_higher:9.1%}")
    if figure:
        plot(runs, figure)


def label(folder) -> str:
    """``model + guide`` from the run folder's run.json (its folder name if unreadable)."""
    try:
        run = json.loads((Path(folder) / "run.json").read_text())
        return f"{run['model']['name']} + {run['guide']['name']}"
    except (OSError, KeyError, ValueError):
        return Path(folder).name


def plot(runs, path):
    """Test log p(x) against epoch for each run, and the paired difference of the second minus the
    first with its standard error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in runs:
        epochs = sorted(rows)
        left.errorbar(epochs, [rows[e]["log_likelihood"] for e in epochs], [rows[e]["stderr"] for e in epochs],
                      marker="o", ms=3, capsize=2, label=label(name))
    left.set(xscale="log", xlabel="epoch (50,000 images each)", ylabel="test log p(x), nats (K=1000)",
             ylim=(max(min(r["log_likelihood"] for _, rows in runs for r in rows.values()) - 2, -200), None))
    left.legend()
    (_, a), (b_name, b) = runs
    common = sorted(set(a) & set(b))
    stats = [paired_difference(b[e]["per_datapoint"], a[e]["per_datapoint"]) for e in common]
    right.errorbar(common, [d.mean for d in stats], [d.stderr for d in stats], marker="o", ms=3, capsize=2)
    right.axhline(0.0, color="grey", lw=0.8)
    right.set(xscale="log", xlabel="epoch", ylabel="paired difference, nats per image",
              title=f"{label(b_name)}  minus  {label(runs[0][0])}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main():
    p = _harness.parser(__doc__.split("\n\n")[0], num_samples=1000, seed=0, device="cpu", figure=None)
    p.add_argument("--pair", choices=sorted(PAIRS), help="1, 2 or ladder")
    p.add_argument("--out", help="the run folder (resumed if it exists)")
    p.add_argument("--eval-every", type=int, default=25, help="epochs between evaluations")
    p.add_argument("--num-test", type=int, default=1000, help="first N test images (the same for every pair)")
    p.add_argument("--hours", type=float, default=2.0, help="stop at the first evaluation after this long")
    p.add_argument("--objective", default="elbo", choices=["elbo", "iwae"],
                   help="the training bound (iwae: Burda et al.'s importance-weighted rows; a run keeps its bound)")
    p.add_argument("--init", default="torch", choices=["torch", "glorot", "burda"],
                   help="torch's default initialisation, Glorot-uniform, or Burda et al.'s (Glorot, output bias at "
                        "the data's logits); used when a run starts")
    p.add_argument("--particles", type=int, default=5, help="k of --objective iwae (Burda et al.: 5 and 50)")
    p.add_argument("--kl-warmup", type=int, default=0,
                   help="linear KL warm-up in steps (default 0, as the documented runs; pyrovae fit's hvae: 2500)")
    p.add_argument("--compare", nargs=2, metavar="RUN", help="print the paired curves of two run folders")
    args = p.parse_args()
    if args.compare:
        compare(args.compare, args.figure)
    elif args.pair and args.out:
        train(args)
    else:
        p.error("give --pair and --out (train), or --compare RUN RUN")


if __name__ == "__main__":
    main()
