"""The VRNN (Chung et al. 2015) on the Bach chorales piano rolls (``bach-chorales``).

Trains models/vrnn.py with its filtering guide (guides/vrnn.py) on the 213 training chorales in
length buckets (:meth:`~pyrovae.data.sequences.SequenceDataSet.bucketed`, batch ``--batch-size``,
Adam ``--lr``, ELBO, seed 0) for ``--epochs``, then prints the importance-sampled log-likelihood
per time step (beat) on valid and test: the sum over chorales of log p(x_{1:T}) (K =
``--num-samples`` draws of the guide per chorale) divided by the split's beats, with the ELBO per
step beside it, and the same for the independent-keys baseline (each key on with its training
frequency, the exact likelihood), and the KL per beat along one guide draw. The JSB Chorales
literature (another split) reports roughly 4-9 nats per step: a guide, not a target.

    OMP_NUM_THREADS=1 python benchmarks/vrnn_chorales.py                     # the docs/sequences.md figure
    OMP_NUM_THREADS=1 python benchmarks/vrnn_chorales.py --epochs 2 --num-samples 10   # a quick look
"""

from __future__ import annotations

import math
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.infer.objectives import make_objective
from pyrovae.guides.vrnn import VRNNGuide
from pyrovae.models.vrnn import VRNN


def per_step(model, guide, split, num_samples):
    """(log-likelihood per step, its standard error, ELBO per step) over a split's chorales."""
    est = log_likelihood(model, guide, split, num_samples=num_samples)
    beats = float(split["lengths"].sum())
    n = len(split["lengths"])
    return est.log_likelihood * n / beats, est.stderr * n / beats, est.elbo * n / beats


def _chain(fn):
    """The RecurrentNormal under the plate's expansion."""
    while not hasattr(fn, "step_params"):
        fn = fn.base_dist
    return fn


@torch.no_grad()
def kl_per_step(model, guide, split):
    """sum over real steps of KL(q(z_t | x_t, g_{t-1}) || p(z_t | h_{t-1})) along one guide draw,
    per beat: how much the latents carry."""
    batch = {"x": split["x"], "mask": split["mask"]}
    guide_trace = pyro.poutine.trace(guide).get_trace(**batch)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(**batch)
    z = guide_trace.nodes["z"]["value"]  # (N, T, Z), one site over the steps
    q = torch.distributions.Normal(*_chain(guide_trace.nodes["z"]["fn"]).step_params(z))
    p = torch.distributions.Normal(*_chain(model_trace.nodes["z"]["fn"]).step_params(z))
    kl = torch.distributions.kl_divergence(q, p).sum(-1)  # (N, T)
    return float((kl * split["mask"]).sum()) / float(split["lengths"].sum())


def independent_keys(train, split):
    """log-likelihood per step of independent keys, each on with its (smoothed) training frequency."""
    mask = train["mask"]
    p = (train["x"][mask].sum(0) + 0.5) / (mask.sum() + 1.0)
    x = split["x"][split["mask"]]
    return float(torch.distributions.Bernoulli(probs=p).log_prob(x).sum() / len(x))


def main():
    parser = _harness.parser(__doc__.splitlines()[0], epochs=40, batch_size=16, lr=3e-3, z_dim=16, num_samples=100,
                             seed=0)
    parser.add_argument("--rnn-dim", type=int, default=128)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--kl-warmup", type=int, default=0, help="linear KL warm-up in steps for the latent models (default 0, as the documented runs; pyrovae fit's own default is each model's: vrnn 1000, hvae 2500)")
    args = parser.parse_args()

    data = load_dataset("bach-chorales")
    pyro.set_rng_seed(args.seed)
    sizes = dict(x_dim=88, z_dim=args.z_dim, rnn_dim=args.rnn_dim, feature_dim=args.feature_dim, hidden_dims=(64,))
    model, guide = VRNN(**sizes), VRNNGuide(**sizes)
    loader = data.bucketed("train", batch_size=args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    result = fit(model, guide, loader, objective=make_objective("elbo", warmup_steps=args.kl_warmup),
                 epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False,
                 valid_data=data.valid)
    seconds = time.perf_counter() - t0
    model.eval(), guide.eval()
    print(f"threads {torch.get_num_threads()}, {args.epochs} epochs in {seconds:.0f} s "
          f"({seconds / args.epochs:.2f} s/epoch), batch {args.batch_size}, lr {args.lr}, sizes {sizes}")
    shown = result.metrics[:: max(1, args.epochs // 6)]
    for m in shown + ([] if shown[-1] is result.metrics[-1] else result.metrics[-1:]):
        beats = float(data.train["lengths"].sum()) / len(data.train["lengths"])
        print(f"  epoch {m['epoch']:3d}: train loss {m['train_loss']:.1f} nats/chorale "
              f"({m['train_loss'] / beats:.2f}/beat, approx.), valid ELBO {m.get('valid_elbo', math.nan):.1f}")
    print(f"{'split':6s} {'VRNN log p / beat':>22s} {'VRNN ELBO / beat':>17s} {'KL / beat':>10s} "
          f"{'indep. keys / beat':>19s}")
    for name in ("valid", "test"):
        split = getattr(data, name)
        pyro.set_rng_seed(args.seed)
        ll, se, elbo = per_step(model, guide, split, args.num_samples)
        kl = kl_per_step(model, guide, split)
        print(f"{name:6s} {ll:14.3f} ± {se:.3f} {elbo:17.3f} {kl:10.3f} {independent_keys(data.train, split):19.3f}"
              f"   (K={args.num_samples})")


if __name__ == "__main__":
    main()
