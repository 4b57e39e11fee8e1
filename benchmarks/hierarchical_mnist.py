"""One stochastic layer, two, and the Ladder VAE at equal budget on dynamically binarized MNIST.

Three pairs, the same budget (``--epochs`` over the first ``--num-train`` training images,
batch ``--batch-size``, Adam ``--lr``, linear KL warm-up over ``--warmup-epochs`` epochs, seed):

- ``vae`` + ``diag``: one layer, x - 200 - 200 - z(50) (Burda et al.'s one-layer architecture);
- ``hvae`` + ``hvae``: two layers, x - 200 - 200 - z1(100) - 100 - 100 - z2(50), bottom-up guide;
- ``hvae`` + ``ladder``: the same generative model with the Ladder VAE's precision-weighted
  top-down inference (the guide reads the model's top-down network).

On the first ``--num-test`` test images (the same images for all three) it prints the
importance-sampled log p(x) (K = ``--num-samples``, each model's guide as proposal) with its
standard error, the paired differences (mean ± standard error over the images), the active
units per layer (Burda et al.: Var_x E_q[z_j | x] > 0.01) and the seconds per epoch, and writes
the figures as JSON (``--json``). ``--init burda`` starts every pair as Burda et al.'s reference
code does (Glorot-uniform layers, the decoder's output bias at the training mean's logits):
without it the two-layer model spends its first epochs on a long plateau and stays behind.

    OMP_NUM_THREADS=1 python benchmarks/hierarchical_mnist.py --epochs 30 --num-train 10000 --warmup-epochs 0 \
        --num-test 1000 --init burda --only 1 2 ladder 1iwae 2iwae    # docs/hierarchical.md, run F
    OMP_NUM_THREADS=1 python benchmarks/hierarchical_mnist.py --epochs 1 --num-train 2000 --num-test 100 --num-samples 100
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.guides.hierarchical import BottomUpGuide, LadderGuide
from pyrovae.infer.objectives import make_objective
from pyrovae.models.hierarchical import HierarchicalVAE, active_units_per_layer
from pyrovae.models.vae import VAE
from pyrovae.nn import initialize_
from pyrovae.evaluation.compare import paired_difference


def build(kind: str, x_dim: int, args, init: str = "torch", train_x=None):
    """The pair of the row ``kind``. ``init="burda"``: Burda et al.'s initialisation (their
    reference code): Glorot-uniform weights, zero biases, the decoder's output bias at the
    logits of the training images' mean (``train_x``)."""
    pair = _pair(kind, x_dim)
    initialize_(*pair, {"x": train_x} if init == "burda" else {}, init)  # what fit(init=...) does, on all rows
    return pair


def _pair(kind: str, x_dim: int):
    h = dict(x_dim=x_dim, hidden_dims=(200, 200), activation="tanh")
    if kind == "1 layer (vae)":
        return VAE(z_dim=50, **h), DiagNormalGuide(z_dim=50, **h)
    if kind == "1 layer, iwae (vae)":
        return VAE(z_dim=50, **h), DiagNormalGuide(z_dim=50, **h)
    if kind == "1 layer, z(100) (vae)":
        return VAE(z_dim=100, **h), DiagNormalGuide(z_dim=100, **h)
    model = HierarchicalVAE(z_dim=50, lower_z_dims=(100,), upper_hidden_dims=(100, 100), **h)
    if kind.startswith("2 layers"):
        return model, BottomUpGuide(z_dim=50, lower_z_dims=(100,), upper_hidden_dims=(100, 100), **h)
    return model, LadderGuide.for_model(model)


def main():
    p = _harness.parser(__doc__.split("\n\n")[0], epochs=10, batch_size=100, lr=1e-3, num_samples=1000, seed=0,
                        json=None, device="cpu")
    p.add_argument("--num-train", type=int, default=10000, help="first N training images")
    p.add_argument("--warmup-epochs", type=float, default=2.0, help="linear KL warm-up length, in epochs (0: none)")
    p.add_argument("--num-test", type=int, default=2000, help="first N test images (paired)")
    p.add_argument("--only", nargs="*", default=None, help="run only these (1, 1iwae, 1z100, 2, 2iwae, ladder)")
    p.add_argument("--iwae-particles", type=int, default=5, help="k of the '2 layers, iwae' row's training bound")
    p.add_argument("--init", default="torch", choices=["torch", "glorot", "burda"],
                   help="torch's default layer initialisation, Glorot-uniform, or Burda et al.'s (Glorot, output "
                        "bias at the data's logits)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    dataset = load_dataset("mnist", data_dir=os.environ.get("PYROVAE_DATA"))  # dynamic binarization
    dataset = dataclasses.replace(dataset, train={k: v[:args.num_train] for k, v in dataset.train.items()},
                                  valid={k: v[:1000] for k, v in dataset.valid.items()})
    test = {"x": dataset.test["x"][:args.num_test].to(args.device)}
    steps_per_epoch = -(-args.num_train // args.batch_size)
    warmup = int(args.warmup_epochs * steps_per_epoch)
    print(f"MNIST, dynamic binarization: {args.num_train} training images, {args.epochs} epochs, batch "
          f"{args.batch_size}, Adam {args.lr}, KL warm-up {warmup} steps, seed {args.seed}; "
          f"{torch.get_num_threads()} thread(s), device {args.device}; K={args.num_samples} on the first {args.num_test} test images")
    kinds = ["1 layer (vae)", "1 layer, iwae (vae)", "1 layer, z(100) (vae)", "2 layers (hvae)", "2 layers, iwae (hvae)", "ladder (hvae + ladder)"]
    shorts = ("1", "1iwae", "1z100", "2", "2iwae", "ladder")
    if args.only:
        kinds = [k for k, short in zip(kinds, shorts) if short in args.only]
    rows = {}
    for kind in kinds:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model, guide = build(kind, dataset.x_dim, args, args.init, dataset.train["x"])
        t0 = time.perf_counter()
        objective = (make_objective("iwae", num_particles=args.iwae_particles, warmup_steps=warmup) if "iwae" in kind
                     else make_objective("elbo", warmup_steps=warmup))
        result = fit(model, guide, dataset, objective=objective, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False, device=args.device)
        train_s = time.perf_counter() - t0
        model.eval(), guide.eval()
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        est = log_likelihood(model, guide, test, num_samples=args.num_samples)
        eval_s = time.perf_counter() - t0
        pyro.set_rng_seed(args.seed)
        units = active_units_per_layer(guide, test["x"][:1000], num_samples=100)
        relative = active_units_per_layer(guide, test["x"][:1000], num_samples=100, relative=True)
        rows[kind] = dict(est=est, train_s=train_s, eval_s=eval_s, units=units, relative=relative,
                          valid_elbo=result.metrics[-1].get("valid_elbo"))
        if args.json:  # what is done so far, in case the rest does not finish
            with open(f"{args.json}.partial", "a") as f:
                f.write(json.dumps({"model": kind, "per_datapoint": est.per_datapoint.tolist(), "units": units,
                                    "relative_units": relative, "train_s": train_s, "elbo": est.elbo}) + "\n")
        print(f"  {kind}: log p(x) {est.log_likelihood:.2f} ± {est.stderr:.2f}, ELBO {est.elbo:.2f}, "
              f"active units {units} (relative {relative}), {train_s / args.epochs:.1f} s/epoch, eval {eval_s:.0f} s", flush=True)

    print(f"\ntest log p(x), nats (first {args.num_test} test images, K={args.num_samples}, mean ± standard error):")
    print(f"{'model':24s} {'log p(x)':>16s} {'ELBO':>8s} {'active units per layer':>26s} {'s/epoch':>8s}")
    for kind, r in rows.items():
        units = ", ".join(f"{name} {a}/{n}" for name, (a, n) in r["units"].items())
        print(f"{kind:24s} {r['est'].log_likelihood:8.2f} ± {r['est'].stderr:5.2f} {r['est'].elbo:8.2f} "
              f"{units:>26s} {r['train_s'] / args.epochs:8.1f}")
    paired = {}
    names = list(rows)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = paired_difference(rows[b]["est"], rows[a]["est"])
            paired[f"{b} - {a}"] = (d.mean, d.stderr)
            print(f"paired, {b} - {a}: {d.mean:+.2f} ± {d.stderr:.2f} nats per image "
                  f"(higher on {d.fraction_higher:.1%} of the images)")
    if args.json:
        out = {"budget": {k: v for k, v in vars(args).items() if k != "json"}, "warmup_steps": warmup,
               "threads": torch.get_num_threads(),
               "models": {k: {"log_likelihood": r["est"].log_likelihood, "stderr": r["est"].stderr,
                              "elbo": r["est"].elbo, "active_units": r["units"], "relative_active_units": r["relative"],
                              "seconds_per_epoch": r["train_s"] / args.epochs, "eval_seconds": r["eval_s"],
                              "valid_elbo": r["valid_elbo"]} for k, r in rows.items()},
               "paired": {k: {"mean": m, "stderr": s} for k, (m, s) in paired.items()}}
        _harness.write_json(args.json, out)


if __name__ == "__main__":
    main()
