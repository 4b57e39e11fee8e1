"""VRNN, deep Markov model and the RNN without latents on the Bach chorales, paired.

All three are trained with the same budget (epochs, batch in length buckets, lr, seed) and the
same recurrent size; the two latent-variable models are evaluated by importance sampling with
the same K on the same test chorales, the RNN (models/vrnn.py's BernoulliRNN) by its exact
log-likelihood. The figure is log p(x) per beat (the sum over the test chorales divided by
their real steps); the paired differences are taken per chorale and scaled to a beat the same
way (sum of differences / beats, standard error over chorales).

The test chorales are evaluated sorted by length in groups of ``--eval-batch`` (less padding),
the K particles drawn in chunks of at most ``--max-pass`` particle x chorale pairs (the
``max_pass`` of :func:`pyrovae.log_likelihood`).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/sequences_chorales.py --epochs 20 --num-samples 1000

``--init`` starts all three (fit's ``init``; default: each model's own, docs/sequences.md#initialisation);
docs/sequences.md's 20- and 100-epoch tables were measured from torch's layers: ``--init torch``.
``--valid`` validates on the 69 validation chorales after every epoch, and each model is scored
with its weights at its best validation ELBO (fit's ``keep_best``; the epoch is printed); without
it, the last epoch's, as the tables were measured.
"""

import math
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.infer.objectives import make_objective
from pyrovae.guides.dmm import DMMGuide
from pyrovae.guides.vrnn import VRNNGuide
from pyrovae.models.dmm import DMM
from pyrovae.models.sentence import no_latents
from pyrovae.models.vrnn import VRNN, BernoulliRNN
from pyrovae.nn import INITS

parser = _harness.parser(__doc__.splitlines()[0], epochs=5, batch_size=16, lr=3e-3, z_dim=16, num_samples=1000,
                         seed=0)
parser.add_argument("--hidden", type=int, default=64, help="recurrent state and hidden widths of all three")
parser.add_argument("--eval-batch", type=int, default=8, help="test chorales per evaluation pass (sorted by length)")
parser.add_argument("--max-pass", type=int, default=5000, help="particle x chorale pairs alive at once")
parser.add_argument("--limit", type=int, default=None, help="only the first N test chorales (timing)")
parser.add_argument("--only", default="VRNN,DMM,RNN", help="comma-separated subset of VRNN, DMM, RNN")
parser.add_argument("--init", choices=INITS, default=None,
                    help="how all three start (fit's init; default: each model's own; the documented tables: torch)")
parser.add_argument("--kl-warmup", type=int, default=0, help="linear KL warm-up in steps for the latent models (default 0, as the documented runs; pyrovae fit's own default is each model's: vrnn 1000, hvae 2500)")
parser.add_argument("--valid", action="store_true",
                    help="validate after every epoch and score each model at its best validation ELBO (keep_best)")


def main():
    args = parser.parse_args()
    data = load_dataset("bach-chorales")
    h, z = args.hidden, args.z_dim
    makers = {
        "VRNN": lambda: (VRNN(x_dim=88, z_dim=z, rnn_dim=h, feature_dim=h, hidden_dims=(h,)),
                         VRNNGuide(x_dim=88, z_dim=z, rnn_dim=h, feature_dim=h, hidden_dims=(h,))),
        "DMM": lambda: (DMM(x_dim=88, z_dim=z, transition_dim=h, emission_dim=h),
                        DMMGuide(x_dim=88, z_dim=z, rnn_dim=h)),
        "RNN": lambda: (BernoulliRNN(x_dim=88, rnn_dim=h, feature_dim=h, hidden_dims=(h,)), no_latents),
    }
    names = [name.strip() for name in args.only.split(",")]
    order = torch.arange(len(data.test["lengths"]))[:args.limit]  # the file's order, then sorted by length
    order = order[torch.argsort(data.test["lengths"][order], stable=True)]
    longest = int(data.test["lengths"][order].max())
    test = {k: v[order][:, :longest] if v.dim() > 1 else v[order] for k, v in data.test.items()}
    beats = float(test["lengths"].sum())
    n = len(test["lengths"])
    per = {}
    print(f"threads {torch.get_num_threads()}, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, "
          f"z {z}, hidden {h}, init {args.init or 'default'}, K={args.num_samples} (max_pass {args.max_pass}, {args.eval_batch} chorales a pass); "
          f"test: {n} chorales, {beats:.0f} beats", flush=True)
    for name in names:
        pyro.set_rng_seed(args.seed)
        model, guide = makers[name]()
        t0 = time.perf_counter()
        # an Objective, not the default: fit would give the VRNN its own KL warm-up, which the documented runs lack
        result = fit(model, guide, data.bucketed("train", batch_size=args.batch_size, seed=args.seed),
                     objective=make_objective("elbo", warmup_steps=args.kl_warmup),
                     epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False, init=args.init,
                     valid_data=data.valid if args.valid else None, valid_every=1 if args.valid else 0)
        seconds = (time.perf_counter() - t0) / args.epochs
        kept = (f"   (weights of epoch {result.weights_epoch}, validation ELBO {result.best['valid_elbo']:.2f}; "
                f"epoch {args.epochs}: {result.metrics[-1]['valid_elbo']:.2f})" if result.best else "")
        model.eval()
        t0 = time.perf_counter()
        if name == "RNN":
            per[name] = model.log_prob(test["x"], test["mask"]).double()
            mean = float(per[name].mean())
            stderr = float(per[name].std() / math.sqrt(n))
            extra = "exact"
        else:
            guide.eval()
            pyro.set_rng_seed(args.seed)
            est = log_likelihood(model, guide, test, num_samples=args.num_samples, batch_size=args.eval_batch,
                                 max_pass=args.max_pass)
            per[name] = est.per_datapoint.double()
            mean, stderr = est.log_likelihood, est.stderr
            extra = (f"ELBO / beat {est.elbo * n / beats:8.3f}   ESS mean {float(est.ess.mean()):.1f} "
                     f"min {float(est.ess.min()):.1f}")
        evaluation = time.perf_counter() - t0
        print(f"{name:5s} {seconds:6.2f} s/epoch   test log p / beat {mean * n / beats:8.3f} ± {stderr * n / beats:.3f}"
              f"   {extra}   (evaluation {evaluation:.0f} s){kept}", flush=True)
    for a, b in (("DMM", "VRNN"), ("RNN", "VRNN"), ("RNN", "DMM")):
        if a in per and b in per:
            d = per[a] - per[b]
            print(f"{a} - {b}, paired over {n} test chorales: {float(d.sum()) / beats:+.3f} "
                  f"± {float(d.std() / math.sqrt(n)) * n / beats:.3f} nats / beat")


if __name__ == "__main__":
    main()
