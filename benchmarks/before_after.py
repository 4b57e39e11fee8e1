"""``pyrovae bench`` of an older commit against the working tree, interleaved in one run.

Used to show that a redesign made nothing slower: the older commit is exported with
``git archive`` into a temporary folder, laid out as the installed package (``models/`` and
``guides/`` become ``pyrovae.models`` and ``pyrovae.guides``, as pyproject maps them), and
each round runs ``pyrovae bench`` in a fresh process on the old tree, then on the new one,
so background load hits both alike. Printed per configuration: the median over rounds of the
suite's ms/step and of its ratio to the hand-written step (measured in the same process),
old and new, and new/old.

    OMP_NUM_THREADS=1 python benchmarks/before_after.py --old 2eada66 --rounds 3
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["--guides", "diag", "iaf", "--objectives", "elbo", "meanfield", "iwae5", "--batch-sizes", "100",
         "--blocks", "5", "--block-seconds", "0.25", "--threads", "1"]


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


def bench(pythonpath: str | None, out: Path) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    code = "import sys; from pyrovae.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, "bench", *BENCH, "--json", str(out)], env=env, check=True,
                   cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["table"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the older commit (e.g. 2eada66)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="write the table here too")
    args = p.parse_args()
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        old_site = export(args.old, Path(tmp))
        for r in range(args.rounds):
            for label, path in (("old", str(old_site)), ("new", None)):
                for row in bench(path, Path(tmp) / f"{label}-{r}.json"):
                    key = (row["guide"], row["objective"], row["batch_size"])
                    rows.setdefault(key, {"old": [], "new": []})[label].append((row["suite ms"], row["ratio"]))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    table = []
    print(f"# pyrovae bench, {args.old} (old) against the working tree (new), {args.rounds} interleaved rounds, "
          "1 thread; medians over rounds")
    print("| guide | objective | B | old suite ms | new suite ms | new/old | old ratio to plain | new ratio to plain |")
    print("|---|---|---|---|---|---|---|---|")
    for (guide, objective, batch), runs in rows.items():
        old_ms = statistics.median(ms for ms, _ in runs["old"])
        new_ms = statistics.median(ms for ms, _ in runs["new"])
        old_ratio = statistics.median(r for _, r in runs["old"])
        new_ratio = statistics.median(r for _, r in runs["new"])
        table.append({"guide": guide, "objective": objective, "batch_size": batch, "old suite ms": old_ms,
                      "new suite ms": new_ms, "old ratio": old_ratio, "new ratio": new_ratio})
        print(f"| {guide} | {objective} | {batch} | {old_ms:.2f} | {new_ms:.2f} | {new_ms / old_ms:.3f} | "
              f"{old_ratio:.3f} | {new_ratio:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"old": args.old, "rounds": args.rounds, "table": table}, indent=1))


if __name__ == "__main__":
    main()
