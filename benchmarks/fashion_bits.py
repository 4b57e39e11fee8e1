"""Bits per dimension on Fashion-MNIST's 8-bit grey levels with the discretized logistic
mixture likelihood of PixelCNN++ (Salimans et al. 2017).

Rows (conv encoder, the ``conv`` guide, for each):

* ``conv-vae``: a conv decoder, pixels independent given z, each a mixture of
  ``--num-mixtures`` discretized logistics over the 256 grey levels;
* ``pixelcnn-vae``: the gated PixelCNN decoder conditioned on z with the same likelihood
  (pixel i given the pixels before it and z);
* ``pixelcnn-vae infovae``: the same under the InfoVAE objective (alpha = 1).

The images are read unbinarized (``binarize="none"``: grey level / 255) and scored as the
integer grey levels. On the same ``--test-size`` test images: the importance-sampled
-log p(x) (K = ``--num-samples``) in nats and in bits per dimension, -log p(x) / (784 ln 2),
with standard errors, the paired difference to the first row, the KL and the active units.

``--reference REF.json``: the per-image -log p(x) of a reference implementation on the same test
images (benchmarks/pixelcnnpp_reference.py's ``--out``: PixelCNN++ at the same budget); each row
then also has its paired difference to the reference in bits/dim (row - reference: below zero,
ours is better), and the table a row for the reference.

    OMP_NUM_THREADS=1 python benchmarks/fashion_bits.py --json out.json --figure out.png
"""

from __future__ import annotations

import json
import math
import tempfile
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

import pyrovae
from pyrovae.data.datasets import load_dataset
from pyrovae.evaluation.monitors import latent_monitors
from pyrovae.guides.conv import ConvGuide
from pyrovae.models.conv import ConvVAE
from pyrovae.models.pixelcnn import PixelCNNVAE
from pyrovae.evaluation.compare import paired_difference
from pyrovae.nn import INITS

BITS = 784 * math.log(2)


def main():
    p = _harness.parser(__doc__, data_dir=None, train_size=10000, test_size=1000, epochs=5, batch_size=100,
                        lr=1e-3, z_dim=16, num_samples=1000, device="cuda" if torch.cuda.is_available() else "cpu",
                        seed=0, json=None, figure=None)
    p.add_argument("--rows", default="conv-vae;pixelcnn-vae;pixelcnn-vae infovae")
    p.add_argument("--num-mixtures", type=int, default=5)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--lam", type=float, default=1000.0)
    p.add_argument("--max-pass", type=int, default=None, help="particle x datapoint pairs per pass (memory)")
    p.add_argument("--init", choices=INITS, default=None,
                   help="how every row starts (fit's init; default: the model's; docs/autoregressive.md's GPU table: torch)")
    p.add_argument("--reference", default=None, help="JSON of a reference's per-image -log p(x) (\"nll\")")
    args = p.parse_args()
    reference = None
    if args.reference:
        with open(args.reference) as f:
            reference = json.load(f)
        if len(reference["nll"]) != args.test_size:
            raise SystemExit(f"{args.reference} scores {len(reference['nll'])} test images, not --test-size "
                             f"{args.test_size}: run both on the same images")
        reference["nll"] = torch.tensor(reference["nll"], dtype=torch.float64)

    device = torch.device(args.device)
    data = load_dataset("fashion-mnist", data_dir=args.data_dir, binarize="none")
    train = {"x": data.train["x"][: args.train_size].to(device)}
    order = torch.randperm(len(data.test["x"]), generator=torch.Generator().manual_seed(0))
    test = {"x": data.test["x"][order[: args.test_size]].to(device)}
    likelihood = dict(likelihood="logistic-mixture", num_mixtures=args.num_mixtures)
    pixel = dict(num_layers=args.num_layers, pixel_channels=args.channels, **likelihood)
    makers = {"conv-vae": (lambda: ConvVAE(784, args.z_dim, channels=(32, 64), **likelihood), "elbo", {}),
              "pixelcnn-vae": (lambda: PixelCNNVAE(784, args.z_dim, **pixel), "elbo", {}),
              "pixelcnn-vae infovae": (lambda: PixelCNNVAE(784, args.z_dim, **pixel), "infovae",
                                       {"alpha": 1.0, "lam": args.lam})}
    machine = _harness.machine(device)
    results, figures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.rows.split(";")):
            make, objective, options = makers[name]
            t0, cpu0 = time.perf_counter(), time.process_time()
            pyro.set_rng_seed(args.seed)
            model, guide = make().to(device), ConvGuide(784, args.z_dim, channels=(32, 64)).to(device)
            pyro.clear_param_store()
            pyrovae.fit(model, guide, train, objective=pyrovae.make_objective(objective, **options), epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False, out_dir=f"{tmp}/{i}",
                        init=args.init)
            train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            model.eval(), guide.eval()
            pyro.set_rng_seed(args.seed)
            mon = latent_monitors(model, guide, test, max_datapoints=args.test_size)
            pyro.set_rng_seed(args.seed)
            ll = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples, batch_size=None,
                                        max_pass=args.max_pass)
            with torch.no_grad():
                pyro.set_rng_seed(args.seed)
                figures.append((name, torch.cat([test["x"][:10], model.sample(10, mean=False)]).cpu()))
            row = {"name": name, "objective": objective, "seconds_per_epoch": train_seconds / args.epochs,
                   "cpu_seconds_per_epoch": train_cpu / args.epochs,
                   "test_nll": -ll.log_likelihood, "test_nll_se": ll.stderr, "bits_per_dim": -ll.log_likelihood / BITS,
                   "bits_per_dim_se": ll.stderr / BITS, "test_elbo": ll.elbo, "kl": mon.rate,
                   "active_units": mon.active_units, "mutual_info": mon.mutual_information,
                   "per_datapoint": ll.per_datapoint.double().cpu()}
            if reference is not None:  # row - reference, bits/dim: -log p(x) of both, rescaled
                d = paired_difference(-row["per_datapoint"] / BITS, reference["nll"] / BITS)
                row["vs_reference_bits"], row["vs_reference_bits_se"] = d.mean, d.stderr
            results.append(row)
            bits = f"{row['bits_per_dim']:.4f} ± {row['bits_per_dim_se']:.4f}"
            print(f"{name}: {time.perf_counter() - t0:.0f} s, {bits} "
                  f"bits/dim, KL {mon.rate:.2f}, AU {mon.active_units}", flush=True)
            rows = [{k: v for k, v in r.items() if k != "per_datapoint"} for r in results]
            summary = None if reference is None else {
                k: v for k, v in reference.items() if k in ("bits_per_dim", "bits_per_dim_se", "train_cpu_s", "args")}
            _harness.write_json(args.json, {"machine": machine, "args": vars(args), "rows": rows, "reference": summary})

    print(f"\n{machine}; Fashion-MNIST 8-bit, {args.train_size} training images, {args.epochs} epochs, "
          f"z = {args.z_dim}, {args.num_mixtures} logistics, {args.test_size} test images, K = {args.num_samples}\n")
    print("\n".join(_harness.header(["model + objective", "s/epoch (CPU s)", "-log p(x) (nats)", "bits/dim",
                                     "vs first (bits/dim, paired)", "vs reference (bits/dim, paired)",
                                     "-ELBO bits/dim", "KL (nats)", "active units"])))
    if reference is not None:
        nll = reference["nll"]
        se = float(nll.std() / math.sqrt(len(nll)))
        print(f"| reference ({args.reference}) | {reference['train_cpu_s'] / reference['args']['epochs']:.1f} CPU s | "
              f"{float(nll.mean()):.1f} ± {se:.1f} | {float(nll.mean()) / BITS:.4f} ± {se / BITS:.4f} | | - | | | |")
    base = results[0]["per_datapoint"]
    for r in results:
        if r is not results[0]:  # bits/dim: the negated log-likelihood difference, rescaled
            d = paired_difference(base / BITS, r["per_datapoint"] / BITS)
            paired = f"{d.mean:+.4f} ± {d.stderr:.4f}"
        else:
            paired = "-"
        vs_ref = f"{r['vs_reference_bits']:+.4f} ± {r['vs_reference_bits_se']:.4f}" if reference is not None else "-"
        print(f"| {r['name']} | {r['seconds_per_epoch']:.1f} ({r['cpu_seconds_per_epoch']:.1f}) | "
              f"{r['test_nll']:.1f} ± {r['test_nll_se']:.1f} | "
              f"{r['bits_per_dim']:.4f} ± {r['bits_per_dim_se']:.4f} | {paired} | {vs_ref} | {-r['test_elbo'] / BITS:.4f} | "
              f"{r['kl']:.2f} | {r['active_units']} / {args.z_dim} |")
    if args.figure:
        from matplotlib.figure import Figure

        from pyrovae.evaluation.plots import image_grid, save_figure

        fig = Figure(figsize=(7, 1.8 * len(figures)))
        for k, (name, images) in enumerate(figures):
            ax = fig.add_subplot(len(figures), 1, k + 1)
            ax.imshow(image_grid(images, (28, 28), ncol=10), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name}: test images / samples x ~ p(x)", fontsize=8)
            ax.axis("off")
        save_figure(fig, args.figure)


if __name__ == "__main__":
    main()
