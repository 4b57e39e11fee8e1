"""Semi-supervised text classification on debian-descriptions (Xu et al. 2017's SSVAE setting).

For each number of labels per class (``--per-class``, default 10 and 100 of each of the 14
sections, balanced) and each label draw (``--seeds``), it fits the semi-supervised text VAE
(models/ssvae_text.py, guides/ssvae_text.py) with the ``enum`` objective (the label summed out
exactly over the 14 classes on unlabelled texts) on the labelled texts plus an unlabelled pool:
``--unlabelled`` of the other labelled-train texts with their labels hidden (in-distribution)
and ``--extra-pool`` texts of ``debian-descriptions.unlabelled`` (texts of *other* Debian
sections: out of the 14 classes). Then it reports the test accuracy and macro-F1 of q(y | x).
Beside it, the **baseline**: the same classifier (the same LSTM encoder and softmax layer, the
same initialisation seed) trained on the labelled texts alone with cross-entropy for the same
number of Adam steps at the same learning rate. Mean and spread (sample standard deviation)
over the draws, and the paired difference (SSVAE - baseline) with its standard error.

``alpha`` (the classifier term's weight per labelled row) is ``--alpha-scale`` times the
paper's 0.1 N in per-row units (``0.1 N / (r N_l)``, about 1; see pyrovae/infer/enum.py).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/ssvae_debian.py --init torch --out ssvae_debian.json   # docs/text.md's tables
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/ssvae_debian.py --per-class 100   # from ssvae-text's default start

``--init`` starts the pair as ``fit(..., init=...)`` does (default: the model's own, as ``pyrovae fit``:
Glorot's layers, the decoder's softmax bias at the training tokens' log frequencies); the baseline's
classifier gets the same layers (Glorot's for ``glorot``/``burda``), so the start is not a difference
between the two. The tables of docs/text.md before 2026-12-07 are from torch's layers (``--init torch``).
    OMP_NUM_THREADS=1 python benchmarks/ssvae_debian.py --per-class 10 --seeds 0 --epochs 1 --unlabelled 200
"""

from __future__ import annotations

import statistics
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py
import torch.nn.functional as F

from pyrovae.data.sequences import load_debian_descriptions
from pyrovae.guides.ssvae_text import SSVAETextGuide
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.ssvae_text import SSVAEText, semi_supervised_text
from pyrovae.nn import INITS, default_init, glorot_, initialize_


def sizes(args, vocab_size):
    return dict(vocab_size=vocab_size, num_classes=14, z_dim=args.z_dim, embed_dim=args.embed_dim,
                hidden_dim=args.hidden_dim)


def fit_ssvae(args, ds, seed, alpha):
    pyro.set_rng_seed(seed)
    options = sizes(args, len(ds.vocab))
    model = SSVAEText(**options, word_dropout=args.word_dropout)
    guide = SSVAETextGuide(**options, share_encoder=args.share_encoder)
    scheme = args.init or default_init(model)
    initialize_(model, guide, {"x": ds.train["x"], "mask": ds.train["mask"]}, scheme)  # as fit(init=scheme)
    objective = EnumELBO(alpha=alpha)
    params = list(model.parameters()) + list(guide.parameters())
    optim = torch.optim.Adam(params, lr=args.lr)
    loader = ds.bucketed("train", args.batch_size, seed=seed)
    steps, start, losses = 0, time.time(), []
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        model.train(), guide.train()
        total = 0.0
        for batch in loader:
            loss = objective.loss(model, guide, batch)
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(batch["x"])
            steps += 1
        losses.append(total / len(ds.train["x"]))
        print(f"  epoch {epoch + 1}: loss {losses[-1]:.2f} ({time.time() - start:.0f} s)", flush=True)
    guide.eval()
    return guide, steps, time.time() - start, losses


def fit_baseline(args, ds, base, seed, steps):
    """The guide's classifier (LSTM + softmax) on the labelled texts alone, ``steps`` Adam steps."""
    pyro.set_rng_seed(seed)
    guide = SSVAETextGuide(**sizes(args, len(ds.vocab)), share_encoder=args.share_encoder)
    if (args.init or default_init(SSVAEText)) in ("glorot", "burda"):  # the SSVAE's classifier's layers
        glorot_(guide)
    params = guide.classifier_parameters()
    optim = torch.optim.Adam(params, lr=args.lr)
    rows = torch.tensor(ds.names["labelled_rows"])
    labelled = {k: base.train[k][rows] for k in ("x", "mask", "lengths", "y")}
    g = torch.Generator().manual_seed(seed)
    guide.train()
    start, done = time.time(), 0
    while done < steps:
        order = torch.randperm(len(rows), generator=g)
        for i in range(0, len(rows), args.batch_size):
            index = order[i:i + args.batch_size]
            longest = int(labelled["lengths"][index].max())
            x, mask = labelled["x"][index, :longest], labelled["mask"][index, :longest]
            loss = F.cross_entropy(guide.classify(x, mask), labelled["y"][index])
            optim.zero_grad()
            loss.backward()
            optim.step()
            done += 1
            if done == steps:
                break
    guide.eval()
    return guide, time.time() - start


def summary(values):
    if len(values) < 2 or any(v != v for v in values):  # one draw, or a model not trained (--baseline-only)
        return (statistics.mean(values) if values else float("nan")), float("nan")
    return statistics.mean(values), statistics.stdev(values)


def main(argv=None):
    parser = _harness.parser(__doc__, epochs=2, batch_size=32, z_dim=16, lr=3e-3)
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--unlabelled", type=int, default=2000, help="hidden-label train texts in the pool")
    parser.add_argument("--repeats", type=int, default=None,
                        help="times each labelled text is in an epoch's stream (default: the data set's, about a "
                             "tenth of the pool)")
    parser.add_argument("--extra-pool", type=int, default=0, help="texts of .unlabelled (other sections) in the pool")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--embed-dim", type=int, default=48)
    parser.add_argument("--hidden-dim", type=int, default=48)
    parser.add_argument("--word-dropout", type=float, default=0.0)
    parser.add_argument("--share-encoder", action="store_true", help="one LSTM for q(y | x) and q(z | x, y)")
    parser.add_argument("--alpha-scale", type=float, default=50.0)
    parser.add_argument("--baseline-steps", choices=("same", "labelled"), default="same",
                        help="same: the baseline takes the SSVAE's number of steps; labelled: as many steps as show "
                             "it as many labelled texts as the SSVAE's stream shows its classifier (epochs x the "
                             "labelled rows of the stream), at the same batch size")
    parser.add_argument("--baseline-only", action="store_true",
                        help="train only the baseline (the SSVAE's steps counted from its stream, not trained)")
    parser.add_argument("--init", default=None, choices=INITS,
                        help="how the pair starts (fit's init; default: the model's own, burda; docs/text.md's "
                             "tables before 2026-12-07: torch)")
    parser.add_argument("--out", default=None, help="write the figures (JSON) here, each run as it finishes")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    base = load_debian_descriptions(vocab_size=args.vocab, max_length=args.max_length,
                                    unlabelled=args.extra_pool > 0)
    results = {"config": vars(args), "runs": [], "summary": {}}
    for per_class in args.per_class:
        runs = []
        for seed in args.seeds:
            ds = semi_supervised_text(base, per_class, seed, unlabelled=args.unlabelled, extra_pool=args.extra_pool,
                                      repeats=args.repeats)
            n_l, r = 14 * per_class, ds.names["repeats"]
            paper_alpha = 0.1 * (ds.names["num_unlabelled"] + n_l) / (r * n_l)
            alpha = args.alpha_scale * paper_alpha
            print(f"{per_class} per class, draw {seed}: {ds.names['num_unlabelled']} unlabelled, {n_l} labels x {r}, "
                  f"alpha {alpha:.2f} ({args.alpha_scale} x the paper's {paper_alpha:.3f})", flush=True)
            if args.baseline_only:
                steps, seconds, losses = len(ds.bucketed("train", args.batch_size, seed=seed)) * args.epochs, 0.0, []
                ss_acc = ss_f1 = ss_valid = float("nan")
            else:
                guide, steps, seconds, losses = fit_ssvae(args, ds, seed, alpha)
                ss_acc, ss_f1 = guide.scores(base.test)
                ss_valid = guide.scores(base.valid)[0]
            labelled_seen = int(ds.train["labelled"].sum()) * args.epochs
            base_steps = steps if args.baseline_steps == "same" else -(-labelled_seen // args.batch_size)
            baseline, base_seconds = fit_baseline(args, ds, base, seed, base_steps)
            b_acc, b_f1 = baseline.scores(base.test)
            b_valid = baseline.scores(base.valid)[0]
            run = {"per_class": per_class, "seed": seed, "steps": steps, "baseline_steps": base_steps,
                   "labelled_seen": labelled_seen, "alpha": alpha, "paper_alpha": paper_alpha,
                   "ssvae_test_accuracy": ss_acc, "ssvae_test_macro_f1": ss_f1, "ssvae_valid_accuracy": ss_valid,
                   "baseline_test_accuracy": b_acc, "baseline_test_macro_f1": b_f1, "baseline_valid_accuracy": b_valid,
                   "ssvae_seconds": seconds, "baseline_seconds": base_seconds, "ssvae_losses": losses}
            print(f"  SSVAE test accuracy {100 * ss_acc:.2f}% macro-F1 {100 * ss_f1:.2f}% ({steps} steps, {seconds:.0f} s); "
                  f"baseline {100 * b_acc:.2f}% / {100 * b_f1:.2f}% ({base_steps} steps, {base_seconds:.0f} s)", flush=True)
            runs.append(run)
            results["runs"].append(run)
            _harness.write_json(args.out, results)
        table = {}
        for metric in ("test_accuracy", "test_macro_f1"):
            ss = [100 * r_[f"ssvae_{metric}"] for r_ in runs]
            bl = [100 * r_[f"baseline_{metric}"] for r_ in runs]
            diff = [a - b for a, b in zip(ss, bl)]
            d_mean, d_sd = summary(diff)
            table[metric] = {"ssvae": summary(ss), "baseline": summary(bl),
                             "difference": (d_mean, d_sd / len(diff) ** 0.5 if len(diff) > 1 else float("nan"))}
            print(f"{per_class} per class, {metric}: SSVAE {table[metric]['ssvae'][0]:.2f} +- {table[metric]['ssvae'][1]:.2f}, "
                  f"baseline {table[metric]['baseline'][0]:.2f} +- {table[metric]['baseline'][1]:.2f}, "
                  f"paired difference {d_mean:+.2f} +- {table[metric]['difference'][1]:.2f} (se)", flush=True)
        results["summary"][str(per_class)] = table
        _harness.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
