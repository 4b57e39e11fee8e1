"""The HMM-VAE (Ebbers et al. 2017) discovers the units of ``digit-sequences``: NMI and log-likelihood.

Trains models/hmm_vae.py with its frame-wise guide (guides/hmm_vae.py) on the 500 training
sequences of ``digit-sequences`` (8x8 digits whose classes follow a Markov chain, 2-5 frames a
class; pyrovae/data/digit_sequences.py) in length buckets, the units summed out exactly in the
model's prior (the pair's ``elbo`` objective; until 2026-12-07 the ``enum`` objective summed them
out over 3 T sites, the same loss and gradients at the same seed) (Adam ``--lr``, batch ``--batch-size`` sequences, ``--epochs``), for each seed
of ``--seeds``. Then, on the test sequences' frames:

- **NMI** (scikit-learn's ``normalized_mutual_info_score``, arithmetic mean) of the discovered
  units (the Viterbi path given the guide's means) with the true classes; beside it the NMI of the
  frame-wise unit ``argmax_s p(z_t | s)`` (the chain ignored), and of the baselines at the same
  budget: k-means (k = 10, 10 restarts) on the raw frames, and k-means and a 10-component GMM on
  the latent means of a plain VAE (models/vae.py, the same z_dim and widths, trained on the same
  frames, one at a time, for the same epochs), each clustering fit on the training frames; and a
  two-stage pipeline: a Gaussian HMM with K units fit afterwards on the VAE's latent means of the
  training sequences (started at k-means, 300 full-batch Adam steps on the forward algorithm's
  likelihood), its Viterbi path on the test sequences: what training the chain jointly adds;
  and that two-stage model trained on jointly as an HMM-VAE for ``--joint-epochs`` more epochs
  (the VAE's encoder and decoder and the HMM's chain and units its start, as Ebbers et al. start
  theirs from a GMM-HMM);
- **log-likelihood per frame**, importance-sampled (K = ``--num-samples``) with its standard
  error: the HMM-VAE's log p(x_{1:T}) per sequence (the chain summed by the forward algorithm)
  and the VAE's sum of log p(x_t) over the same sequence's frames; the paired difference
  (HMM-VAE minus VAE) per sequence, mean +- standard error, divided by the mean frames per sequence.

    OMP_NUM_THREADS=1 python benchmarks/hmm_vae_digits.py                       # the docs/sequences.md figure
    OMP_NUM_THREADS=1 python benchmarks/hmm_vae_digits.py --epochs 5 --seeds 0 --num-samples 10   # a quick look
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyro
import torch
import _harness  # benchmarks/_harness.py
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score as nmi
from sklearn.mixture import GaussianMixture

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.guides.hmm_vae import HMMVAEGuide
from pyrovae.infer.objectives import make_objective
from pyrovae.models.hmm_vae import HMMVAE
from pyrovae.models.vae import VAE
from pyrovae.nn import INITS


def frames(split):
    """The real frames of a split, ``(F, D)``, their true units ``(F,)`` and each frame's sequence."""
    mask = split["mask"]
    rows = torch.arange(len(mask))[:, None].expand_as(mask)
    return split["x"][mask], split["units"][mask], rows[mask]


def clusters_nmi(method, train_features, test_features, truth, seed):
    if method == "kmeans":
        fitted = KMeans(10, n_init=10, random_state=seed).fit(train_features)
    else:
        fitted = GaussianMixture(10, covariance_type="diag", n_init=3, random_state=seed).fit(train_features)
    return nmi(truth, fitted.predict(test_features))


def two_stage_hmm(z_train, mask_train, z_test, mask_test, num_units, seed, steps=300):
    """A Gaussian HMM fit afterwards on fixed latents (the plain VAE's means): the HMM-VAE's chain and
    unit Gaussians, means and scales started at k-means' clusters, trained alone by full-batch Adam on
    the forward algorithm's log-likelihood; returns the test Viterbi units ``(N, T)``."""
    hmm = HMMVAE(x_dim=1, num_units=num_units, z_dim=z_train.shape[-1], hidden_dims=(1,))
    fitted = KMeans(num_units, n_init=10, random_state=seed).fit(z_train[mask_train].numpy())
    labels = torch.as_tensor(fitted.labels_)
    frames = z_train[mask_train]
    spread = torch.stack([frames[labels == k].std(0) if (labels == k).sum() > 1 else torch.ones(frames.shape[-1])
                          for k in range(num_units)])
    with torch.no_grad():
        hmm.unit_loc.copy_(torch.as_tensor(fitted.cluster_centers_, dtype=torch.float32))
        hmm.unit_scale_raw.copy_(spread.clamp_min(0.05).expm1().log())  # softplus^-1: scales start at the clusters'
    params = [hmm.init_logits, hmm.trans_logits, hmm.unit_loc, hmm.unit_scale_raw]
    optimizer = torch.optim.Adam(params, lr=0.05)
    frames_total = float(mask_train.sum())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -hmm.forward_algorithm(hmm.unit_log_prob(z_train), mask_train).sum() / frames_total
        loss.backward()
        optimizer.step()
    return hmm, hmm.viterbi(z_test, mask_test)


def mean_se(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    return float(values.mean()), float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan


def main():
    parser = _harness.parser(__doc__.splitlines()[0], epochs=60, batch_size=32, lr=3e-3, z_dim=8, num_samples=1000)
    parser.add_argument("--num-units", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--joint-epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--init", default=None, choices=INITS,
                        help="how the HMM-VAE and the VAE start (default: fit's, the data-mean start; the documented "
                             "figures are from --init torch); the joint fit keeps the weights it is given")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    data = load_dataset("digit-sequences")
    train_x, _, _ = frames(data.train)
    test_x, truth, test_rows = frames(data.test)
    truth = truth.numpy()
    per_seq = float(data.test["lengths"].float().mean())
    print(f"digit-sequences: {len(data.train['x'])} / {len(data.test['x'])} train / test sequences, "
          f"{len(train_x)} / {len(test_x)} frames; threads {torch.get_num_threads()}")
    print(f"budget per model: {args.epochs} epochs, Adam lr {args.lr}; z_dim {args.z_dim}, widths ({args.hidden},)")
    raw = [clusters_nmi("kmeans", train_x.numpy(), test_x.numpy(), truth, s) for s in seeds]
    print(f"k-means on raw frames: NMI {np.mean(raw):.3f} (seeds {', '.join(f'{v:.3f}' for v in raw)})")

    rows = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        model = HMMVAE(x_dim=64, num_units=args.num_units, z_dim=args.z_dim, hidden_dims=(args.hidden,))
        guide = HMMVAEGuide(x_dim=64, z_dim=args.z_dim, hidden_dims=(args.hidden,))
        t0 = time.perf_counter()
        fit(model, guide, data.bucketed("train", batch_size=args.batch_size, seed=seed),
            objective=make_objective("elbo"), epochs=args.epochs, lr=args.lr, seed=seed, progress=False, init=args.init)
        hmm_seconds = time.perf_counter() - t0
        model.eval(), guide.eval()
        with torch.no_grad():
            units = model.units(guide, data.test["x"], data.test["mask"])[data.test["mask"]].numpy()
            z = guide.mean(test_x)
            framewise = model.unit_log_prob(z).argmax(-1).numpy()
            z_train = guide.mean(train_x).numpy()
        hmm_nmi, frame_nmi = nmi(truth, units), nmi(truth, framewise)
        hmm_z_kmeans = clusters_nmi("kmeans", z_train, z.numpy(), truth, seed)

        pyro.set_rng_seed(seed)
        vae = VAE(x_dim=64, z_dim=args.z_dim, hidden_dims=(args.hidden,))
        vae_guide = DiagNormalGuide(x_dim=64, z_dim=args.z_dim, hidden_dims=(args.hidden,))
        frames_per_batch = round(len(train_x) * args.batch_size / len(data.train["x"]))  # the same steps per epoch
        t0 = time.perf_counter()
        fit(vae, vae_guide, train_x, epochs=args.epochs, batch_size=frames_per_batch, lr=args.lr, seed=seed,
            progress=False, init=args.init)
        vae_seconds = time.perf_counter() - t0
        vae.eval(), vae_guide.eval()
        with torch.no_grad():
            loc_train = vae_guide.encode(train_x).base_dist.loc.numpy()
            loc_test = vae_guide.encode(test_x).base_dist.loc.numpy()
        vae_kmeans = clusters_nmi("kmeans", loc_train, loc_test, truth, seed)
        with torch.no_grad():
            seq_train = vae_guide.encode(data.train["x"]).base_dist.loc
            seq_test = vae_guide.encode(data.test["x"]).base_dist.loc
        hmm, hmm_units = two_stage_hmm(seq_train, data.train["mask"], seq_test, data.test["mask"], args.num_units, seed)
        vae_hmm = nmi(truth, hmm_units[data.test["mask"]].numpy())
        joint_nmi = math.nan
        if args.joint_epochs:
            pyro.set_rng_seed(seed)
            joint = HMMVAE(x_dim=64, num_units=args.num_units, z_dim=args.z_dim, hidden_dims=(args.hidden,))
            joint_guide = HMMVAEGuide(x_dim=64, z_dim=args.z_dim, hidden_dims=(args.hidden,))
            joint.decoder.load_state_dict(vae.decoder.state_dict())
            joint_guide.encoder.load_state_dict(vae_guide.encoder.state_dict())
            with torch.no_grad():
                for name in ("init_logits", "trans_logits", "unit_loc", "unit_scale_raw"):
                    getattr(joint, name).copy_(getattr(hmm, name))
            fit(joint, joint_guide, data.bucketed("train", batch_size=args.batch_size, seed=seed),
                objective=make_objective("elbo"), epochs=args.joint_epochs, lr=args.lr, seed=seed, progress=False,
                init="torch")  # keep the weights loaded above
            joint.eval(), joint_guide.eval()
            joint_units = joint.units(joint_guide, data.test["x"], data.test["mask"])
            joint_nmi = nmi(truth, joint_units[data.test["mask"]].numpy())
        vae_gmm = clusters_nmi("gmm", loc_train, loc_test, truth, seed)

        pyro.set_rng_seed(seed)
        hmm_ll = log_likelihood(model, guide, data.test, num_samples=args.num_samples)
        pyro.set_rng_seed(seed)
        vae_ll = log_likelihood(vae, vae_guide, test_x, num_samples=args.num_samples)
        vae_seq = torch.zeros(len(data.test["x"]), dtype=torch.float64).index_add_(
            0, test_rows, vae_ll.per_datapoint.double())
        diff = mean_se(hmm_ll.per_datapoint.double() - vae_seq)
        row = dict(seed=seed, hmm=hmm_nmi, frame=frame_nmi, hmm_z_kmeans=hmm_z_kmeans, vae_kmeans=vae_kmeans,
                   vae_hmm=vae_hmm, joint=joint_nmi,
                   vae_gmm=vae_gmm, hmm_ll=hmm_ll.log_likelihood / per_seq, hmm_se=hmm_ll.stderr / per_seq,
                   hmm_ess=float(hmm_ll.ess.mean()), vae_ll=float(vae_seq.mean()) / per_seq,
                   vae_se=mean_se(vae_seq)[1] / per_seq, diff=diff[0] / per_seq, diff_se=diff[1] / per_seq,
                   hmm_s=hmm_seconds, vae_s=vae_seconds,
                   stay=float(model.log_transition().detach().exp().diag().mean()))
        rows.append(row)
        print(f"seed {seed}: NMI HMM-VAE (Viterbi) {hmm_nmi:.3f}, frame-wise argmax {frame_nmi:.3f}, k-means on its "
              f"z {hmm_z_kmeans:.3f} | VAE z: k-means {vae_kmeans:.3f}, GMM {vae_gmm:.3f}, HMM after {vae_hmm:.3f}, "
              f"then {args.joint_epochs} epochs joint {joint_nmi:.3f}  "
              f"(train {hmm_seconds:.0f} s HMM-VAE, {vae_seconds:.0f} s VAE; learned stay prob. {row['stay']:.2f})")
        print(f"   log p(x) per frame (K={args.num_samples}): HMM-VAE {row['hmm_ll']:.3f} ± {row['hmm_se']:.3f} "
              f"(mean ESS {row['hmm_ess']:.1f}), VAE {row['vae_ll']:.3f} ± {row['vae_se']:.3f}; "
              f"paired difference {row['diff']:+.3f} ± {row['diff_se']:.3f}", flush=True)

    if len(rows) > 1:
        print(f"mean over seeds {seeds}:")
        for key, name in (("hmm", "NMI HMM-VAE (Viterbi)"), ("frame", "NMI HMM-VAE frame-wise"),
                          ("hmm_z_kmeans", "NMI k-means on HMM-VAE z"), ("vae_kmeans", "NMI k-means on VAE z"),
                          ("vae_gmm", "NMI GMM on VAE z"), ("vae_hmm", "NMI Gaussian HMM on VAE z"),
                          ("joint", "NMI two-stage, then joint"),
                          ("hmm_ll", "log p / frame HMM-VAE"),
                          ("vae_ll", "log p / frame VAE"), ("diff", "paired difference / frame")):
            m, se = mean_se([r[key] for r in rows])
            print(f"  {name:28s} {m:8.3f} ± {se:.3f} (over seeds)")


if __name__ == "__main__":
    main()
