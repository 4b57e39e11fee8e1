"""The InfoVAE/MMD objective against the ELBO on MNIST: how close the aggregate posterior
q(z) comes to the prior p(z), and what it costs in log-likelihood.

Same VAE (784-200-200-z, tanh, Bernoulli; diagonal Normal guide), same initial weights,
batches and epochs for every objective in ``--objectives`` (``;``-separated, each
``name`` or ``name:option=value,...``, e.g. ``infovae:alpha=1,lam=100,kernel=imq,kl=sampled``);
``elbo`` is the sampled KL (``Trace_ELBO``), ``meanfield`` the closed form (the diag
guide's default objective). The weights start by ``--init`` (default: the model's,
``burda``: Glorot layers and the decoder's output at the data's mean; ``--init torch``
for torch's layers, as the table before 2026-12 was measured, with ``kl=sampled`` on each
``infovae`` row). Then on the same ``--test-size`` test images:

* ``MMD^2(q(z), p(z))``: the unbiased estimate between one guide draw per test image and as
  many prior draws (Gaussian kernel, scale 2 z), mean and standard error over ``--mmd-reps``
  repetitions of the draws;
* the test log-likelihood by importance sampling (``--num-samples``), with its standard error,
  and the paired difference to the first objective's;
* the mean KL(q(z|x) || p(z)) and the active units (Burda et al.: Cov_x E_q[z_d] > 0.01).

    OMP_NUM_THREADS=1 python benchmarks/infovae.py --data-dir $PYROVAE_DATA --objectives \
        "elbo;meanfield;infovae:alpha=0,lam=10;infovae:alpha=0,lam=1000;infovae:alpha=1,lam=1000;infovae:alpha=1,lam=100,kernel=imq;infovae:alpha=1,lam=10"
"""

from __future__ import annotations

import copy
import math
import tempfile
import time

import pyro
import pyro.distributions as dist
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides import DiagNormalGuide
from pyrovae.infer.mmd import mmd_u
from pyrovae.models import VAE
from pyrovae.nn import INITS, default_init
from pyrovae.evaluation.compare import paired_difference


def parse(spec: str):
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = float(value)
        except ValueError:
            options[key] = value
    return name, options


def main():
    p = _harness.parser(__doc__, data_dir=None, epochs=3, z_dim=10, num_samples=1000, test_size=1000, seed=0,
                        threads=1, json=None)
    p.add_argument("--objectives", default="elbo;infovae:alpha=0,lam=1000;infovae:alpha=1,lam=1000",
                   help="objectives separated by ';', each name or name:option=value,...")
    p.add_argument("--mmd-reps", type=int, default=20)
    p.add_argument("--init", choices=INITS, default=None,
                   help="how the weights start (default: the model's, burda; torch for the old table)")
    args = p.parse_args()
    machine = _harness.start(args)

    specs = [s for s in args.objectives.split(";") if s]

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    torch.manual_seed(args.seed)
    hidden = (200, 200)
    model0, guide0 = VAE(784, args.z_dim, hidden), DiagNormalGuide(784, args.z_dim, hidden)
    test = {"x": dataset.test["x"][: args.test_size]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            name, options = parse(spec)
            model, guide = copy.deepcopy(model0), copy.deepcopy(guide0)
            pyro.clear_param_store()
            t0 = time.perf_counter()
            result = pyrovae.fit(model, guide, dataset, objective=pyrovae.make_objective(name, **options),
                                 epochs=args.epochs, seed=args.seed, progress=False, out_dir=f"{tmp}/{i}",
                                 init=args.init)
            seconds = sum(r["seconds"] for r in result.metrics) / len(result.metrics)
            with torch.no_grad():
                q = guide.encode(test["x"])
                torch.manual_seed(args.seed)
                mmds = torch.stack([mmd_u(q.sample(), torch.randn(len(test["x"]), args.z_dim))
                                    for _ in range(args.mmd_reps)])
                prior = dist.Normal(torch.zeros(args.z_dim), 1.0).to_event(1)
                kl = float(torch.distributions.kl_divergence(q, prior.expand(q.batch_shape)).mean())
                active = int((q.base_dist.loc.var(0) > 0.01).sum())
            pyro.set_rng_seed(args.seed)
            ll = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples)
            rows.append({"objective": spec, "seconds_per_epoch": seconds, "mmd": float(mmds.mean()),
                         "mmd_se": float(mmds.std() / math.sqrt(len(mmds))), "kl": kl, "active_units": active,
                         "test_ll": ll.log_likelihood, "test_ll_se": ll.stderr, "per_datapoint": ll.per_datapoint})
            print(f"{spec}: {time.perf_counter() - t0:.0f} s, MMD^2 {rows[-1]['mmd']:.4f}, log p(x) "
                  f"{ll.log_likelihood:.2f}", flush=True)

    init = args.init or default_init(model0)
    print(f"\n{machine}; VAE 784-200-200-{args.z_dim}, init {init}, {args.epochs} epochs, {args.test_size} test "
          f"images, K={args.num_samples}\n")
    print("\n".join(_harness.header(["objective", "s/epoch", "MMD^2(q(z), p(z))", "KL", "active units",
                                     "test log p(x)", "vs first (paired)"])))
    base = rows[0]["per_datapoint"]
    for r in rows:
        d = paired_difference(r["per_datapoint"], base) if r is not rows[0] else None
        paired = f"{d.mean:+.2f} ± {d.stderr:.2f}" if d is not None else "-"
        print(f"| `{r['objective']}` | {r['seconds_per_epoch']:.1f} | {r['mmd']:.4f} ± {r['mmd_se']:.4f} | "
              f"{r['kl']:.2f} | {r['active_units']} | {r['test_ll']:.2f} ± {r['test_ll_se']:.2f} | {paired} |")
    _harness.write_json(args.json, {"machine": machine, "init": init, "args": vars(args),
                                    "rows": [{k: v for k, v in r.items() if k != "per_datapoint"} for r in rows]})


if __name__ == "__main__":
    main()
