"""``pyrovae evaluate RUN``: the importance-sampled log-likelihood of a run (and AIS).

The result is printed and saved in the run folder under a name that says what produced it,
``evaluation-SPLIT-K{K}[-last][-limit{N}][-ais{T}x{C}[-leapfrog{L}]].json`` (``-last``: with
``--weights last``, the last epoch's parameters instead of the best validation ELBO's); an existing file of
that name is kept unless ``--force`` (``--json`` then prints the stored result, unless the
run has finished more epochs since). The file records the epoch scored; an unfinished run is
scored with a note on stderr. The file also keeps each datapoint's estimate
(``per_datapoint``) and a fingerprint of the data scored, for ``pyrovae compare``.

    pyrovae evaluate runs/x --num-samples 5000
    pyrovae evaluate runs/x --limit 50 --ais --ais-steps 1000 --json
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import List

from pyrovae.cli import common
from pyrovae.evaluation.ais import DEFAULT_AIS_STEPS
from pyrovae.errors import UsageError

HELP = "importance-sampled log-likelihood of a run (and AIS)"


def add_ais_flags(p) -> None:
    p.add_argument("--ais", action="store_true", help="also estimate log p(x) by annealed importance sampling")
    p.add_argument("--ais-steps", type=int, default=DEFAULT_AIS_STEPS,
                   help=f"AIS intermediate distributions T (default {DEFAULT_AIS_STEPS}: on the MNIST VAE 1000 left "
                   "0.3 nat of BDMC gap, 3000 none beyond noise; docs/evaluation.md)")
    p.add_argument("--ais-chains", type=int, default=16, help="AIS chains per datapoint (default 16)")
    p.add_argument("--ais-leapfrog", type=int, default=1, help="leapfrog steps per HMC transition (default 1)")


def output_name(args) -> str:
    """``evaluation-test-K500-limit50-ais1000x16.json``: the settings that produced a result."""
    name = f"evaluation-{args.split}-K{args.num_samples}"
    if getattr(args, "weights", "best") == "last":
        name += "-last"
    if args.limit:
        name += f"-limit{args.limit}"
    if args.ais:
        name += f"-ais{args.ais_steps}x{args.ais_chains}"
        if args.ais_leapfrog != 1:
            name += f"-leapfrog{args.ais_leapfrog}"
    return name + ".json"


def main(argv: List[str]) -> int:
    from pyrovae.evaluation.log_likelihood import log_likelihood

    p = common.Parser(prog="pyrovae evaluate", description="Importance-sampled log-likelihood of a run.")
    p.add_argument("run", help="run folder written by pyrovae fit")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples K per datapoint (default 5000)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N datapoints (binarized-mnist's rows are grouped by digit: its first "
                   "N are not a representative subset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--force", action="store_true", help="replace an earlier result with the same settings")
    common.add_common_flags(p)
    common.add_weights_flag(p)
    add_ais_flags(p)
    args = p.parse_args(argv)
    saved = common.require_run(args.run)
    out = Path(args.run) / output_name(args)
    if args.json and out.is_file() and not args.force:  # a script asks again: the stored result
        print(json.dumps(stored_result(out, args.run)))
        return 0
    common.refuse_overwrite(out, args.force)
    run, dataset, device = common.load_run(args, saved)
    if not run.finished:
        print(f"pyrovae evaluate: note: {args.run} is unfinished (epoch {run.epoch} of {run.epochs}); scoring its "
              f"last checkpoint, the weights of epoch {run.weights_epoch} (`pyrovae fit --out {shlex.quote(str(args.run))} --resume` "
              "continues it)", file=sys.stderr)
    threads = common.set_threads(args.threads, common.linear_flops(run.model, run.guide))
    data = getattr(dataset, args.split)
    if data is None:
        raise UsageError(f"the run's data has no {args.split} split")
    if args.limit:
        data = common.split_rows(dataset, args.split, args.limit)
    t0 = time.perf_counter()
    est = log_likelihood(run.model, run.guide, data, num_samples=args.num_samples, batch_size=args.batch_size,
                         progress=not args.json and sys.stderr.isatty(), device=device)
    result = {**est.as_dict(), "split": args.split, "limit": args.limit, "seconds": time.perf_counter() - t0,
              "run": str(run.path), "data": (saved.get("data") or {}).get("name"), "threads": threads,
              "epoch": run.epoch, "epochs": run.epochs, "weights_epoch": run.weights_epoch}
    ais_values = None
    if args.ais:
        result["ais"], ais_values = ais_result(
            run, data if isinstance(data, dict) else common.split_rows(dataset, args.split), args)
    write_result(out, result, est.per_datapoint, data, ais_values)
    if args.json:  # the summary (the file also keeps per_datapoint and data_sha1)
        print(json.dumps(result))
        return 0
    print(f"{args.split} log-likelihood (K={args.num_samples}, {result['num_datapoints']} datapoints): "
          f"{est.log_likelihood:.3f} ± {est.stderr:.3f} nats; ELBO {est.elbo:.3f}; "
          f"mean ESS {result['ess_mean']:.1f}; {result['seconds']:.1f} s")
    if args.ais:
        a = result["ais"]
        print(f"{args.split} log-likelihood (AIS, T={a['num_steps']}, {a['num_chains']} chains): "
              f"{a['log_likelihood']:.3f} ± {a['stderr']:.3f} nats; acceptance {a['accept_rate']:.2f}; "
              f"{a['seconds']:.1f} s")
    print(f"saved: {out}")
    return 0


def write_result(out: Path, result: dict, per_datapoint, data, ais_per_datapoint=None) -> None:
    """Save an evaluation: its summary, a fingerprint of the data scored, then each
    datapoint's estimate on one line (and with AIS, each datapoint's AIS estimate on another,
    which ``pyrovae compare --ais`` pairs)."""
    from pyrovae.evaluation.compare import data_fingerprint

    summary = json.dumps({**result, "data_sha1": data_fingerprint(data)}, indent=2)
    ais = ("" if ais_per_datapoint is None else
           f',\n  "ais_per_datapoint": {json.dumps(ais_per_datapoint.double().tolist())}')
    text = f'{summary[:-2]}{ais},\n  "per_datapoint": {json.dumps(per_datapoint.double().tolist())}\n}}\n'
    common.write_public(out, lambda tmp: tmp.write_text(text))


def stored_result(path: Path, run_dir) -> dict:
    """The summary of the result saved in ``path`` (without its per-datapoint values), refused
    in one line if the run has finished more epochs since it was scored."""
    from pyrovae.training.files import read_metrics

    result = json.loads(path.read_text())
    metrics = read_metrics(Path(run_dir))
    now = metrics[-1]["epoch"] if metrics else None
    if result.get("epoch") is not None and now is not None and result["epoch"] != now:
        raise UsageError(f"{path} scored epoch {result['epoch']}, and the run is now at epoch {now}; pass --force "
                         "to score it again")
    return {k: v for k, v in result.items() if k not in ("per_datapoint", "ais_per_datapoint", "data_sha1")}


def ais_result(run, data, args):
    """The AIS estimate's summary and its per-datapoint values."""
    from pyrovae.evaluation.ais import ais_log_likelihood

    t0 = time.perf_counter()
    est = ais_log_likelihood(run.model, run.guide, data, num_steps=args.ais_steps, num_chains=args.ais_chains,
                             num_leapfrog_steps=args.ais_leapfrog,
                             progress=not getattr(args, "json", False) and sys.stderr.isatty())
    return {**est.as_dict(), "seconds": time.perf_counter() - t0}, est.per_datapoint
