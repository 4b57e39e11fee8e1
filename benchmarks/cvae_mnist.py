"""The conditional VAE against its deterministic baseline on MNIST half completion (Sohn et al. 2015).

x = the top half of a dynamically binarized MNIST digit, y = its bottom half. Both models have
the same networks (``--hidden-dims``) and budget (``--epochs`` over the 50,000 training
images, ``--batch-size`` 100, Adam 1e-3, seed 0) and start as ``fit`` starts them (``--init``: the
model's default, ``burda``): the CVAE p(z | x) p(y | x, z) with the recognition
guide q(z | x, y), trained on the ELBO; the baseline p(y | x) without z, trained by maximum
likelihood. On the first ``--num-test`` test images it prints log p(y | x), importance-sampled
with the recognition guide (K = ``--num-samples``; the baseline's is exact), with standard
errors and the paired difference on the same images, and saves the completions figure
(docs/figures/cvae_completions.png). With ``--reference DIR`` it also scores Pyro's
examples/cvae as trained in DIR by benchmarks/pyro_cvae_example.py (its saved networks) on the
same test images with the same estimator, and prints the paired differences to ours.

    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py --hybrid-alpha 0.5   # the docs/cvae.md table
    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py --hybrid-alpha 0.5 --init torch --figure OTHER.png  # its "before"
    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py --epochs 1 --num-test 100 --num-samples 100  # a quick look
    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py --epochs 5 --batch-size 128 --num-test 2000 --num-samples 100 \
        --reference DIR                                           # against Pyro's example (docs/cvae.md)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyro
import torch
import _harness  # benchmarks/_harness.py
from matplotlib.figure import Figure

from pyrovae import fit, log_likelihood
from pyrovae.data.datasets import load_dataset
from pyrovae.data.halves import join_halves
from pyrovae.evaluation.plots import image_grid, save_figure
from pyrovae.nn import INITS
from pyrovae.guides.cvae import CVAEGuide
from pyrovae.models.cvae import CVAE, HybridObjective
from pyrovae.evaluation.compare import paired_difference
from pyrovae.evaluation.log_likelihood import LogLikelihood
from pyrovae.infer.importance import (batch_size_of, latent_sites, mean_and_stderr, run_pair, sample_sites,
                                      site_log_prob, summarize)

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "cvae_completions.png"


def train(dataset, deterministic: bool, args, objective=None, generator_sees_x: bool = True):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    sizes = dict(dataset.dims(), z_dim=args.z_dim, hidden_dims=tuple(args.hidden_dims), activation=args.activation,
                 deterministic=deterministic)
    model, guide = CVAE(**sizes, generator_sees_x=generator_sees_x), CVAEGuide(**sizes)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(model, guide, dataset, epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=args.seed,
                 progress=False, init=args.init,
                 **({"objective": objective} if objective is not None else {}))
    seconds = (time.perf_counter() - t0, time.process_time() - c0)  # wall, CPU
    model.eval(), guide.eval()
    return model, guide, result, seconds


REF_BASELINE, REF_CVAE = "Pyro example's baseline", "Pyro example's CVAE"
Z_ONLY = "CVAE p(z|x) p(y|z)"  # --z-only-generator: the generation network of Pyro's example


def reference_batch(test: dict) -> dict:
    """The example's batch for the suite's halves: each whole image transposed (the example's
    left half is then the top half, as benchmarks/pyro_cvae_example.py trains it), ``xs`` with
    the predicted half and ``ys`` with the given half set to -1, its mask value."""
    images = join_halves(test["x"], test["y"]).view(-1, 28, 28).transpose(1, 2).contiguous()
    xs, ys = images.clone(), images.clone()
    xs[:, :, 14:] = -1
    ys[:, :, :14] = -1
    return {"xs": xs, "ys": ys}


def score_reference(folder: Path, test: dict, num_samples: int):
    """``(name, estimate, eval seconds)`` of Pyro's examples/cvae as trained in ``folder`` (its code
    and its ``baseline_net_q2.pth``, ``cvae_net_q2.pth``): the baseline's exact log p(y | x) (its
    own Bernoulli log-likelihood, the negative of its MaskedBCELoss, per image) and the CVAE's
    model/guide pair scored by :func:`pyrovae.log_likelihood` at K = ``num_samples``."""
    import sys

    sys.path.insert(0, str(folder))
    import baseline as ref_baseline  # the example's modules
    import cvae as ref_cvae

    batch = reference_batch(test)
    base = ref_baseline.BaselineNet(500, 500)
    base.load_state_dict(torch.load(folder / "baseline_net_q2.pth"))
    net = ref_cvae.CVAE(200, 500, 500, base)
    net.load_state_dict(torch.load(folder / "cvae_net_q2.pth"))
    base.eval(), net.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        probs = base(batch["xs"]).view(batch["ys"].shape)
        mask = batch["ys"] != -1
        bce = torch.nn.functional.binary_cross_entropy(probs, batch["ys"].clamp(min=0), reduction="none")
        exact = -(bce * mask).flatten(1).sum(-1)
    yield REF_BASELINE, LogLikelihood(float(exact.mean()), float(exact.std() / len(exact) ** 0.5), exact,
                                      torch.ones_like(exact), 1, float(exact.mean())), time.perf_counter() - t0
    t0 = time.perf_counter()
    yield REF_CVAE, one_particle_log_likelihood(net.model, net.guide, batch, num_samples), time.perf_counter() - t0


def pair_log_weight(model, guide, batch: dict) -> torch.Tensor:
    """``log p(y, z | x) - log q(z | x, y)`` per datapoint, ``(B,)``, for one draw of the guide,
    for a pair whose every site has batch shape ``(B,)`` (the example's plate has no size,
    which the suite's estimator would need to find it)."""
    guide_sites, model_sites = run_pair(model, guide, batch)
    return sum(site_log_prob(s) for s in sample_sites(model_sites)) - \
        sum(site_log_prob(s) for s in latent_sites(guide_sites))


def one_particle_log_likelihood(model, guide, data: dict, num_samples: int, batch_size: int = 500) -> LogLikelihood:
    """What :func:`pyrovae.log_likelihood` estimates (the same log-weights, the same summary), one
    particle per run of the pair, for a model that cannot run under a vectorized particle plate
    (the example's selects the predicted pixels by boolean indexing of a ``(B, 784)`` tensor)."""
    lls, esss, elbos = [], [], []
    for start in range(0, batch_size_of(data), batch_size):
        batch = {k: v[start:start + batch_size] for k, v in data.items()}
        with torch.no_grad():
            log_w = torch.stack([pair_log_weight(model, guide, batch) for _ in range(num_samples)])  # (K, B)
        ll, ess, elbo = summarize(log_w)
        lls.append(ll), esss.append(ess), elbos.append(elbo)
    per_datapoint = torch.cat(lls)
    mean, stderr = mean_and_stderr(per_datapoint)
    return LogLikelihood(mean, stderr, per_datapoint, torch.cat(esss), num_samples, float(torch.cat(elbos).mean()))


def completions_figure(dataset, cvae, baseline, path: Path, num_inputs: int = 8, num_z: int = 6) -> Path:
    """Rows: test digits. Columns: the truth, the baseline's completion (mean of p(y | x)), then
    ``num_z`` CVAE completions (mean of p(y | x, z), z ~ p(z | x)); a line marks the cut."""
    x, y = dataset.test["x"][:num_inputs], dataset.test["y"][:num_inputs]
    pyro.set_rng_seed(1)
    samples = cvae.complete(x, num_samples=num_z)  # (S, N, y_dim)
    base = baseline.complete(x, num_samples=1)[0]
    rows = []
    for i in range(num_inputs):
        rows += [join_halves(x[i], y[i]), join_halves(x[i], base[i])]
        rows += [join_halves(x[i], samples[s, i]) for s in range(num_z)]
    grid = image_grid(torch.stack(rows), (28, 28), ncol=2 + num_z)
    fig = Figure(figsize=(1.0 * (2 + num_z), 1.0 * num_inputs + 0.6))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for r in range(num_inputs):  # the cut between the given top and the completed bottom
        ax.axhline(1 + r * 29 + 14 - 0.5, color="tab:red", lw=0.4, alpha=0.6)
    ax.set_xticks([14.5 + c * 29 for c in range(2 + num_z)])
    ax.set_xticklabels(["truth", "baseline"] + [f"CVAE z{s + 1}" for s in range(num_z)], fontsize=7)
    ax.set_yticks([])
    ax.set_title("bottom halves completed from the top (above the red line); z ~ p(z | x)", fontsize=8)
    return save_figure(fig, path)


def main():
    p = _harness.parser(__doc__.split("\n\n")[0], epochs=10, batch_size=100, z_dim=20, num_samples=1000, seed=0,
                        figure=FIGURE)
    p.add_argument("--hidden-dims", type=int, nargs="*", default=[500, 500])
    p.add_argument("--activation", default="relu")
    p.add_argument("--init", choices=INITS, default=None,
                   help="how the networks start (default: fit's, the model's pyrovae.nn.default_init: burda "
                        "for cvae); --init torch reproduces the table measured before burda became the default")
    p.add_argument("--num-test", type=int, default=10000, help="first N test images (paired)")
    p.add_argument("--hybrid-alpha", type=float, default=None,
                   help="also train the CVAE on Sohn et al.'s hybrid objective (cvae-hybrid) with this alpha")
    p.add_argument("--z-only-generator", action="store_true",
                   help="also train the CVAE whose generation network reads z alone, p(y | z) (Pyro's example's)")
    p.add_argument("--reference", type=Path, default=None,
                   help="also score Pyro's examples/cvae trained in this folder (benchmarks/pyro_cvae_example.py) "
                        "on the same test images with the same estimator")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    dataset = load_dataset("mnist-halves", data_dir=os.environ.get("PYROVAE_DATA"))  # dynamic binarization
    test = {k: v[:args.num_test] for k, v in dataset.test.items()}
    print(f"mnist-halves: x = top 392 pixels, y = bottom 392; {len(dataset.train['x'])} training images, "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam 1e-3, hidden {tuple(args.hidden_dims)} "
          f"{args.activation}, z_dim {args.z_dim}, init {args.init or 'the default (burda)'}, "
          f"{torch.get_num_threads()} thread(s)")
    rows = {}
    runs = [("baseline p(y|x), no z", True, None, True), ("CVAE p(z|x) p(y|x,z)", False, None, True)]
    if args.hybrid_alpha is not None:
        runs.append((f"CVAE, hybrid alpha={args.hybrid_alpha:g}", False, HybridObjective(alpha=args.hybrid_alpha),
                     True))
    if args.z_only_generator:
        runs.append((Z_ONLY, False, None, False))
    for name, deterministic, objective, sees_x in runs:
        model, guide, result, seconds = train(dataset, deterministic, args, objective, sees_x)
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        est = log_likelihood(model, guide, test, num_samples=1 if deterministic else args.num_samples)
        rows[name] = (model, est, seconds, time.perf_counter() - t0)
    if args.reference is not None:
        pyro.set_rng_seed(args.seed)
        for name, est, eval_seconds in score_reference(args.reference, test, args.num_samples):
            rows[name] = (None, est, None, eval_seconds)

    print(f"\nlog p(y | x) on the first {args.num_test} test images (nats, mean ± standard error):")
    print(f"{'model':30s} {'log p(y|x)':>18s} {'ELBO':>9s} {'K':>5s} {'train s':>8s} {'train CPU s':>11s} "
          f"{'eval s':>7s}")
    for name, (_, est, seconds, eval_seconds) in rows.items():
        k = est.num_samples if "CVAE" in name else "exact"
        wall, cpu = ("-", "-") if seconds is None else (f"{seconds[0]:.0f}", f"{seconds[1]:.0f}")
        print(f"{name:30s} {est.log_likelihood:10.2f} ± {est.stderr:5.2f} {est.elbo:9.2f} {k!s:>5s} "
              f"{wall:>8s} {cpu:>11s} {eval_seconds:7.0f}")
    names = list(rows)
    (base, base_est, *_), (cvae, cvae_est, *_) = rows[names[0]], rows[names[1]]
    pairs = [(name, names[0]) for name in names[1:] if rows[name][0] is not None]
    if args.z_only_generator:
        pairs.append((names[1], Z_ONLY))
    if args.reference is not None:
        pairs += [(names[1], REF_CVAE), (names[0], REF_BASELINE), (REF_CVAE, REF_BASELINE)]
        if args.z_only_generator:
            pairs.append((Z_ONLY, REF_CVAE))
    for b, a in pairs:
        d = paired_difference(rows[b][1], rows[a][1])
        print(f"paired, {b} - {a}: {d.mean:+.2f} ± {d.stderr:.2f} nats per image "
              f"(higher on {d.fraction_higher:.1%} of the images)")
    print(f"figure: {completions_figure(dataset, cvae, base, args.figure)}")


if __name__ == "__main__":
    main()
