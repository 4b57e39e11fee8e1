"""Posterior families on one model: test log-likelihood and cost of each guide.

Every guide is paired with the same generative model (Burda et al.'s one-stochastic-layer
VAE: 784-200-200-50, tanh, Bernoulli; the same initial decoder weights for all), trained
with the same budget (epochs, batch 100, Adam, learning rate, batch order) on dynamically
binarized MNIST, and scored by importance sampling with K samples per test image. A guide
that declares its own model (``model_name``, e.g. the vMF guide) gets that model at the
same sizes. Guides not registered in this checkout are reported as skipped.

    python benchmarks/guides_mnist.py --data-dir ../shared/data --epochs 10 \\
        --num-samples 1000 --test-size 2000 --out guides_mnist.md

Not a test. Seconds per epoch are noisy on a shared machine: the table also gives each
guide's ratio to the diagonal guide measured in the same run.
"""

from __future__ import annotations

import json
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.guides.base import model_name_of, objective_name_of
from pyrovae.registry import build, get_guide, get_model, list_guides
from pyrovae.evaluation.compare import paired_difference

# (label, registered guide name, its options beyond the shared sizes)
CONFIGS = {
    "diag": ("diag", {}),
    "fullcov": ("fullcov", {}),
    "fullcov, cholesky": ("fullcov", {"parametrization": "cholesky", "offdiag_scale": 1.0}),  # the former default
    "fullcov, relative": ("fullcov", {"parametrization": "relative", "offdiag_scale": 1.0}),
    "iaf-2": ("iaf", {"num_flows": 2}),
    "iaf-4": ("iaf", {"num_flows": 4}),
    "iaf-2, affine": ("iaf", {"num_flows": 2, "step": "affine"}),
    "iaf-2, gated": ("iaf", {"num_flows": 2, "step": "gated"}),
    "iaf-4, b=2": ("iaf", {"num_flows": 4, "sigmoid_bias": 2.0}),  # the paper's gate bias
    "planar-8": ("planar", {"num_flows": 8}),
    "mixture": ("mixture", {}),
    "mixture, K=1": ("mixture", {"num_components": 1}),
    "vmf": ("vmf", {}),
}


def run_one(label, dataset, test, args):
    name, options = CONFIGS[label]
    if name not in list_guides():
        return {"guide": label, "skipped": f"no guide named {name!r} is registered in this checkout"}
    factory = get_guide(name)
    model_factory = get_model(model_name_of(factory))
    sizes = {"z_dim": args.z_dim, "hidden_dims": tuple(args.hidden_dims)}
    pyro.clear_param_store()
    torch.manual_seed(args.seed)  # the same decoder initialization for every guide
    model = build(model_factory, {k: v for k, v in sizes.items() if k in _accepted(model_factory)},
                  fill={"x_dim": dataset.x_dim})
    guide = build(factory, {**sizes, **options}, fill={"x_dim": dataset.x_dim})
    objective = objective_name_of(factory)
    # The per-epoch validation pass (ELBO and latent monitors) runs on a few images only: the
    # monitors' mutual-information estimate scores every draw under every datapoint's q, which
    # for IAF and spline guides inverts each step (z_dim network passes) for every pair.
    valid = {k: v[: args.valid_size] for k, v in dataset.valid.items()}
    result = pyrovae.fit(model, guide, dataset, objective=objective, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False,
                         valid_data=valid, init=args.init)
    seconds = [row["seconds"] for row in result.metrics]
    tail = seconds[1:] or seconds  # the first epoch includes warm-up
    t0 = time.perf_counter()
    pyro.set_rng_seed(args.seed)
    estimate = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples)
    return {
        "guide": label, "name": name, "options": options, "model": model_factory.registry_name,
        "objective": objective, "parameters": sum(p.numel() for p in guide.parameters()),
        "seconds_per_epoch": sum(tail) / len(tail), "train_loss": result.metrics[-1]["train_loss"],
        "valid_elbo": result.metrics[-1].get("valid_elbo"),
        "test_ll": estimate.log_likelihood, "test_ll_stderr": estimate.stderr, "test_elbo": estimate.elbo,
        "eval_seconds": time.perf_counter() - t0, "per_datapoint": estimate.per_datapoint,
    }


def _accepted(factory):
    from pyrovae.registry import constructor_options

    return constructor_options(factory)


def paired_text(row, reference) -> str:
    """Mean and standard error of the per-image difference in log p(x) to the reference
    guide (the same test images: much tighter than comparing the two means)."""
    if reference is None or row is reference:
        return ""
    d = paired_difference(row["per_datapoint"], reference["per_datapoint"])
    return f"{d.mean:+.2f} ± {d.stderr:.2f}"


def table(rows, args, machine) -> str:
    diag = next((r for r in rows if r.get("guide") == "diag" and "skipped" not in r), None)
    reference = diag["seconds_per_epoch"] if diag else None
    lines = [
        f"Dynamically binarized MNIST, model {args.z_dim}-d latent, hidden {tuple(args.hidden_dims)} tanh, "
        f"Bernoulli; {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, seed {args.seed}, init {args.init or 'the model default'}; "
        f"test log-likelihood with K={args.num_samples} on the first {args.test_size} test images. {machine}.",
        "",
        *_harness.header(["guide", "options", "guide params", "s/epoch", "time vs diag", "final train loss",
                          "test ELBO", "test log p(x) (± s.e.)", "log p(x) - diag's (paired s.e.)"]),
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['guide']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "defaults"
        if r["model"] != "vae":
            options += f" (model {r['model']})"
        ratio = f"{r['seconds_per_epoch'] / reference:.2f}" if reference else ""
        lines.append(
            f"| {r['guide']} | `{r['name']}` {options} | {r['parameters']:,} | {r['seconds_per_epoch']:.1f} | {ratio} | "
            f"{r['train_loss']:.2f} | {r['test_elbo']:.2f} | {r['test_ll']:.2f} ± {r['test_ll_stderr']:.2f} | "
            f"{paired_text(r, diag)} |"
        )
    return "\n".join(lines) + "\n"


def main():
    p = _harness.parser(__doc__, data_dir=_harness.DATA_DIR, epochs=10, batch_size=100, lr=1e-3, z_dim=50,
                        hidden_dims=[200, 200], num_samples=1000, test_size=2000, seed=0, threads=None, json=None)
    p.add_argument("--guides", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--init", choices=("torch", "glorot", "burda"), default=None,
                   help="fit's init scheme (default: the model's, burda for the VAE)")
    p.add_argument("--per-datapoint", default=None,
                   help="write each guide's per-image test log p(x) here (JSON), for pairing across runs")
    p.add_argument("--valid-size", type=int, default=100, help="validation images for the per-epoch pass")
    p.add_argument("--out", default=None, help="write the Markdown table here (rewritten after each guide)")
    args = p.parse_args()

    machine = _harness.start(args)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    test = {k: v[: args.test_size] for k, v in dataset.test.items()}
    rows = []
    for label in args.guides:
        t0 = time.perf_counter()
        rows.append(run_one(label, dataset, test, args))
        summary = {k: v for k, v in rows[-1].items() if k != "per_datapoint"}
        print(f"{label}: {json.dumps(summary)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        text = table(rows, args, machine)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        _harness.write_json(args.json, [{k: v for k, v in r.items() if k != "per_datapoint"} for r in rows])
        _harness.write_json(args.per_datapoint, {r["guide"]: r.get("per_datapoint") for r in rows})
    print(text)


if __name__ == "__main__":
    main()
