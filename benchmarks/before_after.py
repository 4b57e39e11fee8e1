"""``pyrovae bench`` of an older commit against the working tree, interleaved in one run.

Used to show that a redesign made nothing slower: the older commit is exported with
``git archive`` into a temporary folder, laid out as the installed package (``models/`` and
``guides/`` become ``pyrovae.models`` and ``pyrovae.guides``, as pyproject maps them), and
each round runs, in fresh processes on the old tree, then on the new one, so background load
hits both alike:

- ``pyrovae bench`` for the suite's pairs and its own plain-function pair ``user``, elbo,
  meanfield and IWAE K = 5 (each tree's own bench; ``--pairs diag iaf`` for a commit older
  than the ``user`` pair);
- a user's pair written as plain Pyro functions (``pyro.module`` in model and guide, the
  784-200-200-50 tanh Bernoulli VAE) trained by ``pyrovae.fit(..., out_dir=...)`` through its
  public API only, so any commit runs it, against the same networks in a hand-written PyTorch
  loop with the same fused Adam, epochs alternating in the same process
  (:func:`plain_pair_child`). Both are timed in process CPU time (fit's epoch ``seconds``
  read from ``time.process_time``): a machine shared with other jobs changes wall times by
  more than the effect sought.

Printed per configuration: the median over rounds of the suite's process CPU ms/step and of
its ratio to the hand-written step (measured in the same process), old and new, and new/old.

    OMP_NUM_THREADS=1 python benchmarks/before_after.py --old 2eada66 --rounds 3
    python benchmarks/before_after.py --old 8e8a15d --rounds 5 --only plain   # the plain pair alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import _harness  # benchmarks/_harness.py

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["--objectives", "elbo", "meanfield", "iwae5", "--batch-sizes", "100",
         "--blocks", "5", "--block-seconds", "0.25", "--threads", "1"]
#: the pairs timed by each tree's own bench (``user``, a plain-function pair, needs a commit from 2026-12-06 on)
PAIRS = ["diag", "iaf", "user"]


def export(commit: str, folder: Path) -> Path:
    """``commit``'s package as it installs: ``folder/pyrovae`` with models/ and guides/ inside."""
    src = folder / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    site = folder / "site"
    shutil.copytree(src / "pyrovae", site / "pyrovae")
    for part in ("models", "guides"):
        if (src / part).is_dir() and not (site / "pyrovae" / part).exists():
            shutil.copytree(src / part, site / "pyrovae" / part)
    return site


def bench(pythonpath: str | None, out: Path, pairs=PAIRS) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    code = "import sys; from pyrovae.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, "bench", "--guides", *pairs, *BENCH, "--json", str(out)], env=env, check=True,
                   cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["table"]


def plain_pair_child(rows: int = 10_000, epochs: int = 3, seed: int = 0) -> dict:
    """In this process (whichever pyrovae is importable): a user's plain-function pair through
    ``pyrovae.fit`` and the same networks in a hand-written loop, epochs alternating; the
    median CPU milliseconds per step of each and the median of the per-epoch ratios."""
    import pyro
    import pyro.distributions as dist
    import torch
    import torch.nn.functional as F

    import pyrovae

    torch.set_num_threads(1)
    fit_module = sys.modules[pyrovae.fit.__module__]
    fit_module.time = types.SimpleNamespace(perf_counter=time.process_time)  # epoch seconds in CPU time
    x_dim, z_dim, batch = 784, 50, 100
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(rows, x_dim, generator=g) < torch.rand(rows, x_dim, generator=g)).float()

    def networks():
        torch.manual_seed(seed)
        mlp = lambda a, b: torch.nn.Sequential(torch.nn.Linear(a, 200), torch.nn.Tanh(), torch.nn.Linear(200, 200),
                                               torch.nn.Tanh(), torch.nn.Linear(200, b))
        return mlp(z_dim, x_dim), mlp(x_dim, 2 * z_dim)

    def pair():
        decoder, encoder = networks()

        def model(x):
            pyro.module("decoder", decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", encoder)
            with pyro.plate("data", x.shape[0]):
                loc, raw = encoder(x).split(z_dim, -1)
                pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1))

        return model, guide

    decoder, encoder = networks()
    optimizer = torch.optim.Adam(list(decoder.parameters()) + list(encoder.parameters()), lr=1e-3, fused=True)

    def hand_epoch():
        order = torch.randperm(rows)
        c0 = time.process_time()
        for i in range(0, rows, batch):
            xb = x.index_select(0, order[i:i + batch])
            loc, raw = encoder(xb).split(z_dim, -1)
            scale = F.softplus(raw) + 1e-5
            eps = torch.randn_like(loc)
            z = loc + scale * eps
            log_px = -F.binary_cross_entropy_with_logits(decoder(z), xb, reduction="none").sum(-1)
            log_w = log_px - 0.5 * (z ** 2).sum(-1) + (0.5 * eps ** 2 + scale.log()).sum(-1)
            loss = -log_w.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return 1000 * (time.process_time() - c0) / (rows // batch)

    hand, suite, ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        pyro.clear_param_store()
        pyrovae.fit(*pair(), x[:1000], epochs=1, batch_size=batch, progress=False, figures=False)  # imports, warm-up
        hand_epoch()
        for e in range(epochs):
            before = hand_epoch()
            pyro.clear_param_store()
            result = pyrovae.fit(*pair(), x, epochs=1, batch_size=batch, lr=1e-3, out_dir=Path(tmp) / str(e),
                                 progress=False, figures=False)
            after = hand_epoch()
            suite.append(1000 * result.metrics[0]["seconds"] / (rows // batch))
            hand.append((before + after) / 2)
            ratios.append(suite[-1] / hand[-1])
    return {"guide": "user (plain functions)", "objective": "elbo", "batch_size": batch,
            "suite ms": statistics.median(suite), "plain ms": statistics.median(hand), "ratio": statistics.median(ratios)}


def plain_pair(pythonpath: str | None, rows: int = 10_000) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--plain-pair-child", "--plain-rows", str(rows)],
                         env=env, check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = _harness.parser(__doc__.split("\n\n")[0], json=None)
    p.add_argument("--old", help="the older commit (e.g. 2eada66)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", choices=["bench", "plain"], default=None,
                   help="only the suite's pairs (pyrovae bench) or only the plain-function pair through fit")
    p.add_argument("--pairs", nargs="+", default=PAIRS,
                   help="the pairs of each tree's bench (default diag iaf user; an older commit may lack user)")
    p.add_argument("--plain-rows", type=int, default=10_000,
                   help="rows of the plain pair's data: each fit is one epoch of rows / 100 steps (default 10000; "
                        "60000 is an MNIST epoch, over which fit's one-off costs, e.g. recording the step, spread)")
    p.add_argument("--plain-pair-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain_pair_child:
        print(json.dumps(plain_pair_child(rows=args.plain_rows)))
        return
    if not args.old:
        p.error("--old COMMIT is required (e.g. --old 2eada66)")
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        old_site = export(args.old, Path(tmp))
        for r in range(args.rounds):
            for label, path in (("old", str(old_site)), ("new", None)):
                found = [] if args.only == "plain" else bench(path, Path(tmp) / f"{label}-{r}.json", args.pairs)
                if args.only != "bench":
                    found.append(plain_pair(path, args.plain_rows))
                for row in found:
                    key = (row["guide"], row["objective"], row["batch_size"])
                    # process CPU time where the bench has it (steadier on a shared machine), else wall time
                    ms, ratio = row.get("suite cpu ms", row["suite ms"]), row.get("cpu ratio", row["ratio"])
                    plain_ms = row.get("plain cpu ms", row["plain ms"])
                    rows.setdefault(key, {"old": [], "new": []})[label].append((ms, ratio, plain_ms))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    table = []
    print(f"# pyrovae bench, {args.old} (old) against the working tree (new), {args.rounds} interleaved rounds, "
          "1 thread; medians over rounds of the process CPU ms/step and its ratio to the hand-written step")
    print("\n".join(_harness.header(["guide", "objective", "B", "old plain ms", "old suite ms", "old ratio",
                                     "new plain ms", "new suite ms", "new ratio", "new/old suite ms",
                                     "ratio range over rounds old / new"])))
    for (guide, objective, batch), runs in rows.items():
        med = {label: [statistics.median(v[i] for v in runs[label]) for i in range(3)] for label in ("old", "new")}
        (old_ms, old_ratio, old_plain), (new_ms, new_ratio, new_plain) = med["old"], med["new"]
        spread = {label: (min(v[1] for v in runs[label]), max(v[1] for v in runs[label])) for label in ("old", "new")}
        table.append({"guide": guide, "objective": objective, "batch_size": batch, "old suite ms": old_ms,
                      "new suite ms": new_ms, "old ratio": old_ratio, "new ratio": new_ratio,
                      "old plain ms": old_plain, "new plain ms": new_plain, "ratio range": spread})
        print(f"| {guide} | {objective} | {batch} | {old_plain:.2f} | {old_ms:.2f} | {old_ratio:.3f} | {new_plain:.2f} | "
              f"{new_ms:.2f} | {new_ratio:.3f} | {new_ms / old_ms:.3f} | {spread['old'][0]:.3f}-{spread['old'][1]:.3f} / "
              f"{spread['new'][0]:.3f}-{spread['new'][1]:.3f} |")
    _harness.write_json(args.json, {"old": args.old, "rounds": args.rounds, "table": table})


if __name__ == "__main__":
    main()
