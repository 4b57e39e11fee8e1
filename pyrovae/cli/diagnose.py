"""``pyrovae diagnose RUN``: RUN/report.md with the IWAE bound and ELBO, PSIS k-hat, latent
monitors, the inference-gap split, figures and an ArviZ netCDF.

    pyrovae diagnose runs/x --num-samples 1000 --ais
"""

from __future__ import annotations

import time
from typing import List

from pyrovae.cli import common
from pyrovae.cli.evaluate import add_ais_flags
from pyrovae.errors import UsageError

HELP = "report.md with IWAE/ELBO, PSIS k-hat, latent monitors, gap split, figures, ArviZ netCDF"


def main(argv: List[str]) -> int:
    from pyrovae.evaluation.report import diagnose

    p = common.Parser(prog="pyrovae diagnose", description="Diagnose a run: writes RUN/report.md, "
                      "RUN/diagnostics.json, RUN/diagnostics.nc and figures.")
    p.add_argument("run", help="run folder written by pyrovae fit")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="importance samples per datapoint for the IWAE bound and k-hat (default 1000)")
    p.add_argument("--num-datapoints", type=int, default=300, help="first N test datapoints (default 300)")
    p.add_argument("--idata-draws", type=int, default=200, help="guide draws per datapoint in diagnostics.nc")
    p.add_argument("--gap-datapoints", type=int, default=100, help="datapoints for the gap split (0: skip)")
    p.add_argument("--ais-datapoints", type=int, default=100, help="datapoints for AIS (with --ais)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--site", default=None, metavar="NAME",
                   help="the latent site the monitors read (default: the guide's only latent site)")
    p.add_argument("--data-dir", default=None)
    common.add_common_flags(p)
    common.add_weights_flag(p)
    add_ais_flags(p)
    args = p.parse_args(argv)
    for name in ("num_samples", "num_datapoints", "idata_draws", "ais_steps", "ais_chains", "ais_datapoints"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    saved = common.require_run(args.run)
    run, dataset, device = common.load_run(args, saved)
    common.set_threads(args.threads, common.linear_flops(run.model, run.guide))
    t0 = time.perf_counter()
    results = diagnose(run, dataset, num_samples=args.num_samples, num_datapoints=args.num_datapoints,
                       idata_draws=args.idata_draws, gap_datapoints=args.gap_datapoints, ais=args.ais,
                       ais_steps=args.ais_steps, ais_chains=args.ais_chains, ais_datapoints=args.ais_datapoints,
                       ais_leapfrog=args.ais_leapfrog, seed=args.seed, site=args.site)
    iw, kh = results["importance"], results["khat"]
    print(f"IWAE K={iw['num_samples']} on {iw['num_datapoints']} test datapoints: {iw['log_likelihood']:.3f} ± "
          f"{iw['stderr']:.3f} nats; ELBO {iw['elbo']:.3f}; k-hat > 0.7 for {kh['share_above_0.7']:.1%}")
    for key, why in results["skipped"].items():
        print(f"skipped {key}: {why}")
    print(f"report: {run.path / 'report.md'} ({time.perf_counter() - t0:.1f} s)")
    return 0
