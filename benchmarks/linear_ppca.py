"""The linear VAE against closed-form probabilistic PCA (issue: "hidden talents" of the VAE).

Trains the suite's ``linear`` model with a linear diagonal-Gaussian encoder (``diag`` guide,
no hidden layer) by full-batch Adam, on two data sets of rank 2 in D = 8:

- ``isotropic``: the noise part of the sample covariance is exactly 0.25 I, so pPCA's
  columns beyond the rank are exactly zero;
- ``gaussian``: the same signal plus ordinary Gaussian noise (sample eigenvalues spread
  around 0.25), the realistic case.

For each latent size it prints the largest principal angle between the learned and pPCA's
rank-2 subspace (and the true one), the learned noise variance against the mean of the discarded eigenvalues,
the exact log p(x) of both, the decoder's singular values, and the active units
(Var_x E[z | x] > 0.01). With ``--figure PATH`` it draws the spectra and the per-direction
posterior-mean variance.

    python benchmarks/linear_ppca.py --figure docs/figures/linear_vae_ppca.png
"""

import math
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py

from pyrovae import fit
from pyrovae.evaluation.monitors import active_units
from pyrovae.evaluation.subspace import leading_subspace, ppca, principal_angles
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import LinearGaussianVAE

SIGNAL, NOISE_VAR, D, N = (9.0, 4.0), 0.25, 8, 2000


def make_data(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    lam = torch.tensor(list(SIGNAL) + [NOISE_VAR] * (D - len(SIGNAL)), dtype=torch.float64)
    q = torch.randn(N, D, generator=g, dtype=torch.float64)
    if kind == "isotropic":
        q, _ = torch.linalg.qr(q - q.mean(0))
        q = q * math.sqrt(N)
    x = q * lam.sqrt() @ u.T + torch.randn(D, generator=g, dtype=torch.float64)
    return x.float(), u[:, : len(SIGNAL)]


def train(x, z_dim, seed=0):
    pyro.set_rng_seed(seed)
    model, guide = LinearGaussianVAE(D, z_dim), DiagNormalGuide(D, z_dim, hidden_dims=())
    for lr in (3e-2, 3e-3, 3e-4):  # torch's layers, kept from one step size to the next (the documented figures)
        fit(model, guide, x, epochs=1000, batch_size=len(x), lr=lr, progress=False, seed=seed, init="torch")
    return model, guide


def main():
    parser = _harness.parser(__doc__.split("\n\n")[0], figure=None)
    parser.add_argument("--z-dims", type=int, nargs="*", default=[1, 2, 4, 6])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'data':10s} {'z':>2s} {'angle':>8s} {'to true':>8s} {'s2 VAE':>8s} {'s2 pPCA':>8s} {'logp VAE':>9s} {'logp pPCA':>9s} "
          f"{'active':>6s} {'sec':>5s}  singular values (VAE | pPCA)")
    for kind in ("isotropic", "gaussian"):
        x, u = make_data(kind)
        for z_dim in args.z_dims:
            t0 = time.perf_counter()
            model, guide = train(x, z_dim)
            seconds = time.perf_counter() - t0
            ref = ppca(x, z_dim)
            weight = model.weight.detach()
            rank = min(z_dim, len(SIGNAL))
            learned = leading_subspace(weight, rank)
            angle = math.degrees(float(principal_angles(learned, leading_subspace(ref.weight, rank)).max()))
            angle_true = math.degrees(float(principal_angles(learned, u[:, :rank]).max()))
            with torch.no_grad():
                count, variance = active_units(guide.encode(x).mean)
                logp = float(model.log_marginal(x).mean())
            row = dict(kind=kind, z_dim=z_dim, angle=angle, angle_true=angle_true, s2=float(model.noise_scale.detach()) ** 2,
                       s2_ref=float(ref.noise_var), logp=logp, logp_ref=float(ref.log_marginal(x.double()).mean()),
                       active=count, variance=variance.tolist(), sv=torch.linalg.svdvals(weight).tolist(),
                       sv_ref=torch.linalg.svdvals(ref.weight).tolist(), seconds=seconds)
            rows.append(row)
            print(f"{kind:10s} {z_dim:2d} {angle:7.3f}° {angle_true:7.3f}° {row['s2']:8.4f} {row['s2_ref']:8.4f} {logp:9.4f} "
                  f"{row['logp_ref']:9.4f} {count:6d} {seconds:5.1f}  "
                  + " ".join(f"{s:.3f}" for s in row["sv"]) + " | " + " ".join(f"{s:.3f}" for s in row["sv_ref"]))
    if args.figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, key, ref_key, title in ((axes[0], "sv", "sv_ref", "decoder singular values"),
                                        (axes[1], "variance", None, "Var_x E[z_j | x] (active if > 0.01)")):
            for row in rows:
                if row["z_dim"] != max(args.z_dims):
                    continue
                values = sorted(row[key], reverse=True)
                line, = ax.plot(range(1, len(values) + 1), values, "o-", label=f"VAE, {row['kind']} noise")
                if ref_key:  # pPCA's zeros show as float64 round-off (~1e-5)
                    ax.plot(range(1, len(values) + 1), row[ref_key], "+", color=line.get_color(), markersize=14,
                            label=f"pPCA closed form, {row['kind']} noise")
            if key == "variance":
                ax.axhline(0.01, color="grey", linestyle=":")
            ax.set_yscale("log")
            ax.set_xlabel("latent direction (sorted)")
            ax.set_title(title)
            ax.legend(fontsize=8)
        fig.suptitle(f"linear VAE vs pPCA: data of rank {len(SIGNAL)} in D={D}, z_dim={max(args.z_dims)}")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print("figure:", args.figure)


if __name__ == "__main__":
    main()
