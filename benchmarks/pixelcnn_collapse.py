"""Posterior collapse with a PixelCNN decoder, and two cures, on statically binarized MNIST.

Same conv encoder (``conv`` guide) and latent size for every row, trained on the same batches:

* ``conv-vae + elbo``: a factorized conv decoder (pixels independent given z), the reference
  where the latent must carry the image;
* ``pixelcnn-vae + elbo``: a gated PixelCNN decoder conditioned on z. A decoder that can model
  p(x) alone makes the KL a pure cost, and the ELBO's optimum puts q(z|x) = p(z): the latent
  collapses (KL, active units and mutual information near 0; Chen et al. 2017, Zhao et al. 2017);
* ``pixelcnn-vae + infovae``: the same decoder under the InfoVAE objective (alpha = 1: no
  per-datapoint KL, lambda * MMD(q(z), p(z))), which has no such pull (Zhao, Song, Ermon);
* ``pixelcnn-vae local + elbo``: VLAE's cure, a decoder of small receptive field (few layers,
  3x3 kernels) that cannot model the global shape and must take it from z (Chen et al.);
* ``... spatial``: the same decoders with z decoded to a feature map of the image's size first
  (``conditioning="spatial"``, PixelVAE's way) instead of a per-channel bias.

Then on the same ``--test-size`` test images: the importance-sampled test log-likelihood
(``--num-samples`` K, with its standard error, and the paired difference to the first row),
the ELBO, the KL term (rate), the active units (Burda et al.: Var_x E_q[z_j] > 0.01), the
mutual information I_q(x; z) (minibatch estimate, at most log N), and a figure: test images,
their reconstructions x ~ p(x | z = E q(z|x)) and prior samples, one block per row.

    OMP_NUM_THREADS=1 python benchmarks/pixelcnn_collapse.py --data-dir $PYROVAE_DATA --json out.json --figure out.png

The rows of docs/autoregressive.md: on a GPU (about 2 minutes on an H200)

    python benchmarks/pixelcnn_collapse.py --train-size 20000 --test-size 500 --epochs 25 --num-samples 1000 \
        --max-pass 100000 --json collapse.json --figure collapse.png

and the CPU measurement of spatial conditioning (one thread, 16-channel decoders, 10,000 training
images, 10 epochs; NLL on 100 test images, KL, active units and MI on 1,000; about 45 minutes)

    OMP_NUM_THREADS=1 python benchmarks/pixelcnn_collapse.py \
        --rows "pixelcnn-vae local spatial elbo;pixelcnn-vae elbo;pixelcnn-vae local elbo" \
        --train-size 10000 --test-size 100 --monitor-size 1000 --epochs 10 --channels 16 \
        --num-samples 1000 --max-pass 2000 --json spatial.json --figure spatial.png

Each row of ``--json`` keeps its per-image -log p(x) (``nll``, the test images in order), so
that another run on the same images can be paired with it. ``--reference FILE`` pairs every row
with a reference's per-image figures on the same test images (a JSON with ``nll``, as
benchmarks/pixelvae_reference.py's ``score --out`` writes): ``vs_reference``, ours - reference in
log p(x) per image (positive: ours ahead), with its standard error. ``--kl-warmup N`` warms the
ELBO rows' KL weight up linearly from 0 over the first N steps (the reference's schedule).
``--init`` passes fit's initialisation scheme (default: the models' own, the data-mean start
``burda``); ``--init torch`` reproduces the rows measured before that became the default.
"""

from __future__ import annotations

import json
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


def rows_for(args):
    deep = dict(num_layers=args.num_layers, pixel_channels=args.channels, first_kernel_size=7, kernel_size=3)
    local = dict(num_layers=2, pixel_channels=args.channels, first_kernel_size=3, kernel_size=3)
    spatial = dict(conditioning="spatial")
    infovae = ("infovae", {"alpha": 1.0, "lam": args.lam})
    elbo = ("elbo", {"warmup_steps": args.kl_warmup} if args.kl_warmup else {})
    rows = {
        "conv-vae elbo": (lambda: ConvVAE(784, args.z_dim, channels=(32, 64)), elbo),
        "pixelcnn-vae elbo": (lambda: PixelCNNVAE(784, args.z_dim, **deep), elbo),
        "pixelcnn-vae infovae": (lambda: PixelCNNVAE(784, args.z_dim, **deep), infovae),
        "pixelcnn-vae local elbo": (lambda: PixelCNNVAE(784, args.z_dim, **local), elbo),
        "pixelcnn-vae spatial elbo": (lambda: PixelCNNVAE(784, args.z_dim, **deep, **spatial), elbo),
        "pixelcnn-vae spatial infovae": (lambda: PixelCNNVAE(784, args.z_dim, **deep, **spatial), infovae),
        "pixelcnn-vae local spatial elbo": (lambda: PixelCNNVAE(784, args.z_dim, **local, **spatial), elbo),
    }
    return [(name, *rows[name]) for name in args.rows.split(";")]


def read_reference(path, test_size: int) -> torch.Tensor:
    """The per-image -log p(x) of a reference's JSON (its ``nll``), float64; it must cover the
    ``test_size`` test images this script scores."""
    with open(path) as f:
        nll = json.load(f).get("nll")
    if nll is None:
        raise ValueError(f"{path} has no per-image 'nll' to pair with")
    if len(nll) != test_size:
        raise ValueError(f"{path} scores {len(nll)} test images, this run {test_size} (--test-size): "
                         "pair runs on the same images")
    return torch.tensor(nll, dtype=torch.float64)


@torch.no_grad()
def pictures(model, guide, test, n, seed):
    """(3 n, 784): n test images, their reconstructions from the posterior mean, n prior draws."""
    pyro.set_rng_seed(seed)
    x = test[:n]
    z = guide.encode(x).base_dist.loc
    recon = model.generate(z) if hasattr(model, "generate") else model.likelihood(z).base_dist.probs
    prior = model.sample(n) if hasattr(model, "generate") else model.sample(n, mean=True)
    return torch.cat([x, recon, prior]).cpu()


def main():
    p = _harness.parser(__doc__, data_dir=None, train_size=10000, test_size=1000, epochs=5, batch_size=100,
                        lr=1e-3, z_dim=16, num_samples=1000, device="cuda" if torch.cuda.is_available() else "cpu",
                        seed=0, json=None, figure=None)
    p.add_argument("--rows", default="pixelcnn-vae elbo;pixelcnn-vae infovae;pixelcnn-vae local elbo;conv-vae elbo")
    p.add_argument("--monitor-size", type=int, default=None,
                   help="test images for KL, active units and MI (default: --test-size)")
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--lam", type=float, default=1000.0, help="InfoVAE lambda (alpha = 1)")
    p.add_argument("--max-pass", type=int, default=None, help="particle x datapoint pairs per pass (memory)")
    p.add_argument("--kl-warmup", type=int, default=0, help="ELBO rows: linear KL warm-up over this many steps")
    p.add_argument("--init", choices=INITS, default=None,
                   help="fit's init scheme (default: the models' own, burda; torch: the default before 2026-12-06)")
    p.add_argument("--reference", default=None,
                   help="JSON of a reference's per-image -log p(x) (nll) on the same test images, to pair with")
    args = p.parse_args()
    reference = read_reference(args.reference, args.test_size) if args.reference else None

    device = torch.device(args.device)
    data = load_dataset("binarized-mnist", data_dir=args.data_dir)
    train = {"x": data.train["x"][: args.train_size].to(device)}
    order = torch.randperm(len(data.test["x"]), generator=torch.Generator().manual_seed(0))  # the file is sorted
    test = {"x": data.test["x"][order[: args.test_size]].to(device)}
    monitored = {"x": data.test["x"][order[: args.monitor_size or args.test_size]].to(device)}
    machine = _harness.machine(device)
    results, figures = [], []
    out = {"machine": machine, "args": vars(args), "rows": results}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make_model, (objective, options)) in enumerate(rows_for(args)):
            t0, cpu0 = time.perf_counter(), time.process_time()
            pyro.set_rng_seed(args.seed)
            model = make_model().to(device)
            guide = ConvGuide(784, args.z_dim, channels=(32, 64)).to(device)
            pyro.clear_param_store()
            fitted = pyrovae.fit(model, guide, train, objective=pyrovae.make_objective(objective, **options),
                                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 progress=False, out_dir=f"{tmp}/{i}", init=args.init)
            train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            model.eval(), guide.eval()
            pyro.set_rng_seed(args.seed)
            mon = latent_monitors(model, guide, monitored, max_datapoints=None)
            pyro.set_rng_seed(args.seed)
            ll = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples, batch_size=None,
                                        max_pass=args.max_pass)
            figures.append((name, pictures(model, guide, test["x"], 10, args.seed)))
            row = {"name": name, "objective": objective, "options": options, "train_seconds": train_seconds,
                   "train_cpu_seconds": train_cpu,
                   "seconds_per_epoch": train_seconds / args.epochs,
                   "last_epoch": {k: v for k, v in fitted.metrics[-1].items() if isinstance(v, (int, float))},
                   "test_nll": -ll.log_likelihood, "test_nll_se": ll.stderr, "test_elbo": ll.elbo,
                   "kl": mon.rate, "active_units": mon.active_units, "mutual_info": mon.mutual_information,
                   "distortion": mon.distortion, "mean_ess": float(ll.ess.float().mean()),
                   "receptive_rows": getattr(model, "receptive_rows", None),
                   "per_datapoint": ll.per_datapoint.double().cpu()}
            row["nll"] = (-row["per_datapoint"]).tolist()
            if reference is not None:
                d = paired_difference(row["per_datapoint"], -reference)
                row["vs_reference"] = {"mean": d.mean, "stderr": d.stderr, "fraction_higher": d.fraction_higher,
                                       "n": d.n}
            results.append(row)
            print(f"{name}: {time.perf_counter() - t0:.0f} s, NLL {row['test_nll']:.2f} ± {ll.stderr:.2f}, "
                  f"ELBO {ll.elbo:.2f}, KL {mon.rate:.2f}, AU {mon.active_units}, MI {mon.mutual_information:.2f}"
                  + (f", vs reference {row['vs_reference']['mean']:+.2f} ± {row['vs_reference']['stderr']:.2f}"
                     if reference is not None else ""), flush=True)
            _harness.write_json(args.json, {**out, "rows": [{k: v for k, v in r.items() if k != "per_datapoint"}
                                                            for r in results]})

    print(f"\n{machine}; binarized MNIST, {args.train_size} training images, {args.epochs} epochs, z = {args.z_dim}, "
          f"{args.test_size} test images, K = {args.num_samples}; KL, AU, MI on "
          f"{len(monitored['x'])} test images\n")
    print("\n".join(_harness.header(["model + objective", "receptive rows", "s/epoch", "test NLL (nats)",
                                     "vs first (paired)", "-ELBO", "KL", "active units", "MI"])))
    base = results[0]["per_datapoint"]
    for r in results:
        d = paired_difference(base, r["per_datapoint"]) if r is not results[0] else None  # NLL: first minus this
        paired = f"{d.mean:+.2f} ± {d.stderr:.2f}" if d is not None else "-"
        print(f"| {r['name']} | {r['receptive_rows'] or '-'} | {r['seconds_per_epoch']:.1f} | "
              f"{r['test_nll']:.2f} ± {r['test_nll_se']:.2f} | {paired} | {-r['test_elbo']:.2f} | {r['kl']:.2f} | "
              f"{r['active_units']} / {args.z_dim} | {r['mutual_info']:.2f} |")
    if args.figure:
        from pyrovae.evaluation.plots import image_grid, save_figure
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 2.4 * len(figures)))
        for k, (name, images) in enumerate(figures):
            ax = fig.add_subplot(len(figures), 1, k + 1)
            ax.imshow(image_grid(images, (28, 28), ncol=10), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name}: test images / reconstructions x ~ p(x | E q(z|x)) / samples", fontsize=8)
            ax.axis("off")
        save_figure(fig, args.figure)


if __name__ == "__main__":
    main()
