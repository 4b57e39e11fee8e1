"""The sentence VAE (Bowman et al. 2016) and the spherical sentence VAE (Xu & Durrett 2018) on PTB.

Trains four pairs on the same PTB training sentences, in the same run, at the same budget
(``--train-size`` sentences drawn at random with ``--seed``, ``--epochs``, length-bucketed
batches of ``--batch-size``, Adam ``--lr``):

- ``lm``: the LSTM language model, the decoder with z removed (models/sentence.py, SentenceLM);
- ``vae``: the Gaussian sentence VAE with Bowman et al.'s tricks: a logistic KL schedule over
  ``--anneal-steps`` optimizer steps and word dropout ``--word-dropout`` on the decoder's inputs;
- ``gauss``: the same Gaussian VAE with neither (the KL collapses);
- ``svae``: the spherical VAE, the vMF posterior with fixed ``--kappa`` and the uniform prior on
  the sphere, with neither trick (its KL is a constant: it cannot collapse).

It records the KL per sentence, KL(q(z|x) || p(z)) in closed form on each training batch, at every
step (the figure ``--figure``), then reports on PTB test: the LM's exact NLL per sentence and
perplexity (exp of the total NLL over the total tokens, ``<eos>`` included) on the whole test set,
each VAE's ELBO and KL on ``--eval-sentences`` test sentences, and the importance-sampled NLL (K =
``--num-samples``) of every VAE on ``--is-sentences`` test sentences drawn at random, paired with
the LM's exact NLL on the same sentences (mean difference +- its standard error). Samples from
the prior and homotopies (greedy decoding) are written to ``--text``.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/sentence_ptb.py            # the docs/text.md figures
    python benchmarks/sentence_ptb.py --device cuda --train-size 0 --epochs 3 --is-sentences 0   # all of it
"""

from __future__ import annotations

from pathlib import Path
import dataclasses
import math
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py
from torch.distributions import kl_divergence

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.guides.sentence import SentenceGuide, SentenceVMFGuide
from pyrovae.infer.objectives import ELBO
from pyrovae.models.sentence import SentenceLM, SentenceVAE, SphericalSentenceVAE, no_latents

PAPER = {"lm": (100, 116), "vae": (101, 119)}  # Bowman et al. Table 2 (PTB test): NLL, perplexity; VAE KL 2


class RecordingELBO(ELBO):
    """The ELBO, recording at every step the KL weight and the mean KL per sentence of the
    batch, KL(q(z|x) || p(z)) in closed form (no gradient)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.kl_trace, self.weight_trace = [], []

    def __call__(self, model, guide, batch, step=None):
        loss = super().__call__(model, guide, batch, step)
        if hasattr(guide, "encode") and torch.is_grad_enabled():
            with torch.no_grad():
                q = guide.encode(batch["x"], batch.get("mask"))
                self.kl_trace.append(float(kl_divergence(q, model.prior(batch["x"].shape[0])).mean()))
                self.weight_trace.append(self.kl_weight(step))
        return loss


class SigmoidAnnealedELBO(RecordingELBO):
    """The KL weight on Bowman et al.'s logistic schedule: ``1 / (1 + exp(-10 (step / steps - 1/2)))``,
    0.007 at step 0, 1/2 at ``steps / 2``, 0.993 at ``steps`` (then it keeps rising to 1)."""

    def __init__(self, anneal_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.anneal_steps = anneal_steps

    def kl_weight(self, step=None):
        if step is None or self.anneal_steps == 0:
            return self.beta
        return self.beta / (1 + math.exp(-10 * (step / self.anneal_steps - 0.5)))


def subset(split: dict, index: torch.Tensor) -> dict:
    rows = {k: v[index] for k, v in split.items()}
    longest = int(rows["lengths"].max())
    return {k: (v[:, :longest] if v.dim() == 2 else v) for k, v in rows.items()}


@torch.no_grad()
def elbo_and_kl(model, guide, data: dict, batch_size: int = 200):
    """(per-sentence ELBO, per-sentence KL) over ``data``, one guide draw each, eval mode."""
    model.eval(), guide.eval()
    elbos, kls = [], []
    for start in range(0, len(data["lengths"]), batch_size):
        b = subset(data, torch.arange(start, min(start + batch_size, len(data["lengths"]))))
        q = guide.encode(b["x"], b["mask"])
        z = q.rsample()
        log_px = model.decoder.likelihood(torch.cat([b["x"].new_full((len(z), 1), 1), b["x"][:, :-1]], 1),
                                          b["mask"], z).log_prob(b["x"])
        kl = kl_divergence(q, model.prior(len(z)))
        elbos.append(log_px - kl), kls.append(kl)
    return torch.cat(elbos), torch.cat(kls)


@torch.no_grad()
def lm_log_prob(lm, data: dict, batch_size: int = 200) -> torch.Tensor:
    lm.eval()
    out = []
    for start in range(0, len(data["lengths"]), batch_size):
        b = subset(data, torch.arange(start, min(start + batch_size, len(data["lengths"]))))
        out.append(lm.log_prob(b["x"], b["mask"]))
    return torch.cat(out)


def ppl(nll_per_sentence: torch.Tensor, lengths: torch.Tensor) -> float:
    return math.exp(float(nll_per_sentence.sum()) / float(lengths.sum()))


def mean_se(values: torch.Tensor) -> tuple:
    return float(values.mean()), float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")


@torch.no_grad()
def text_report(name, model, guide, vocab, test, generator, num_prior=8, steps=7, pairs=((0, 1),), device="cpu"):
    lines = [f"== {name}: greedy decoding of {num_prior} draws of the prior"]
    model.eval(), guide.eval()
    z = model._prior_draw(num_prior, generator)
    for row in model.generate(z.to(device), greedy=True).cpu():
        lines.append("  " + vocab.decode(row))
    for a, b in pairs:
        pair = subset(test, torch.tensor([a, b]))
        means = guide.posterior_mean(pair["x"].to(device), pair["mask"].to(device))
        path = model.interpolate(means[0], means[1], steps)
        lines.append(f"== {name}: homotopy (greedy decoding along the line between posterior means"
                     f"{', on the great circle' if isinstance(model, SphericalSentenceVAE) else ''})")
        lines.append(f"  [test {a}] {vocab.decode(pair['x'][0])}")
        for row in model.generate(path, greedy=True).cpu():
            lines.append("   -> " + vocab.decode(row))
        lines.append(f"  [test {b}] {vocab.decode(pair['x'][1])}")
    return lines


def main():
    parser = _harness.parser(__doc__.splitlines()[0], train_size=3000, epochs=1, batch_size=32, lr=2e-3, z_dim=16,
                             num_samples=1000, device="cpu", seed=0, figure=Path("docs/figures/text-kl.png"),
                             json=None)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--word-dropout", type=float, default=0.3)
    parser.add_argument("--anneal-steps", type=int, default=0, help="0: the training steps")
    parser.add_argument("--kappa", type=float, default=50.0)
    parser.add_argument("--is-sentences", type=int, default=20, help="test sentences for K-sample IS (0: all)")
    parser.add_argument("--eval-sentences", type=int, default=1000, help="test sentences for ELBO and KL (0: all)")
    parser.add_argument("--max-pass", type=int, default=250)
    parser.add_argument("--text", default="docs/text-samples.txt")
    args = parser.parse_args()
    device = torch.device(args.device)

    ptb = load_dataset("ptb")
    g = torch.Generator().manual_seed(args.seed)
    n_train = len(ptb.train["lengths"])
    train_index = torch.randperm(n_train, generator=g)[: args.train_size or n_train]
    data = dataclasses.replace(ptb, train=subset(ptb.train, train_index.sort().values)).to(device)
    test = ptb.test
    n_test = len(test["lengths"])
    eval_index = torch.randperm(n_test, generator=g)[: args.eval_sentences or n_test].sort().values
    is_index = eval_index[: args.is_sentences or len(eval_index)] if args.is_sentences else torch.arange(n_test)
    tokens = int(data.train["lengths"].sum())
    steps_per_epoch = len(data.bucketed("train", args.batch_size))
    anneal = args.anneal_steps or steps_per_epoch * args.epochs
    V = len(ptb.vocab)
    sizes = dict(vocab_size=V, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim)
    print(f"threads {torch.get_num_threads()}, device {device}; {len(train_index)} training sentences "
          f"({tokens} tokens), {args.epochs} epoch(s), batch {args.batch_size} ({steps_per_epoch} steps/epoch), "
          f"lr {args.lr}, z {args.z_dim}, embed {args.embed_dim}, LSTM {args.hidden_dim}, V {V}")

    runs = {
        "lm": (lambda: SentenceLM(**sizes), lambda: no_latents, lambda: RecordingELBO()),
        "vae": (lambda: SentenceVAE(**sizes, z_dim=args.z_dim, word_dropout=args.word_dropout),
                lambda: SentenceGuide(**sizes, z_dim=args.z_dim), lambda: SigmoidAnnealedELBO(anneal)),
        "gauss": (lambda: SentenceVAE(**sizes, z_dim=args.z_dim), lambda: SentenceGuide(**sizes, z_dim=args.z_dim),
                  lambda: RecordingELBO()),
        "svae": (lambda: SphericalSentenceVAE(**sizes, z_dim=args.z_dim),
                 lambda: SentenceVMFGuide(**sizes, z_dim=args.z_dim, fixed_kappa=args.kappa), lambda: RecordingELBO()),
    }
    trained, results = {}, {"args": vars(args), "train_tokens": tokens, "steps_per_epoch": steps_per_epoch}
    for name, (make_model, make_guide, make_objective) in runs.items():
        pyro.clear_param_store()
        torch.manual_seed(args.seed)
        model, guide, objective = make_model().to(device), make_guide(), make_objective()
        if isinstance(guide, torch.nn.Module):
            guide = guide.to(device)
        t0 = time.perf_counter()
        result = fit(model, guide, data.bucketed("train", args.batch_size, seed=args.seed), objective=objective,
                     epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False, device=device, cuda_graphs=False)
        seconds = time.perf_counter() - t0
        trained[name] = (model, guide, objective)
        results[name] = {"seconds": seconds, "seconds_per_epoch": seconds / args.epochs,
                         "train_loss": [m["train_loss"] for m in result.metrics], "kl_trace": objective.kl_trace,
                         "weight_trace": objective.weight_trace}
        print(f"{name:6s} trained in {seconds:.0f} s ({seconds / args.epochs:.1f} s/epoch, "
              f"{seconds / args.epochs * n_train / len(train_index):.0f} s for a full epoch at this rate); "
              f"train loss per epoch {[round(x, 1) for x in results[name]['train_loss']]}"
              + (f"; KL/sentence first {objective.kl_trace[0]:.2f}, last {objective.kl_trace[-1]:.2f}"
                 if objective.kl_trace else ""))

    # ---- the LM, exactly, on the whole test set and on the subsets
    to = lambda split: {k: v.to(device) for k, v in split.items()}  # noqa: E731
    lm = trained["lm"][0]
    lm_lp = lm_log_prob(lm, to(test)).cpu()
    results["lm"].update(nll=float(-lm_lp.mean()), ppl=ppl(-lm_lp, test["lengths"]))
    print(f"\nPTB test ({n_test} sentences, {int(test['lengths'].sum())} tokens incl. <eos>):")
    print(f"  LM exact: NLL {-lm_lp.mean():.2f} nats/sentence, perplexity {ppl(-lm_lp, test['lengths']):.1f}"
          f"   (Bowman et al.: {PAPER['lm'][0]} / {PAPER['lm'][1]})")
    ev, isub = subset(test, eval_index), subset(test, is_index)
    print(f"  ELBO and KL on {len(eval_index)} test sentences; K={args.num_samples} importance sampling on "
          f"{len(is_index)} of them ({int(isub['lengths'].sum())} tokens), paired with the LM on the same:")
    lm_is = -lm_log_prob(lm, to(isub)).cpu()
    print(f"  {'model':6s} {'-ELBO':>8s} {'KL':>6s} {'IS NLL':>16s} {'ppl (IS)':>9s} {'LM NLL same':>12s} "
          f"{'LM ppl':>7s} {'NLL - LM NLL':>16s}")
    for name in ("vae", "gauss", "svae"):
        model, guide, _ = trained[name]
        elbo, kl = elbo_and_kl(model, guide, to(ev))
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        est = log_likelihood(model, guide, to(isub), num_samples=args.num_samples, batch_size=1, max_pass=args.max_pass)
        is_seconds = time.perf_counter() - t0
        nll = -est.per_datapoint.cpu()
        diff = mean_se(nll - lm_is)
        results[name].update(neg_elbo=float(-elbo.mean()), kl=float(kl.mean()), is_nll=mean_se(nll),
                             is_ppl=ppl(nll, isub["lengths"]), lm_nll_same=float(lm_is.mean()),
                             lm_ppl_same=ppl(lm_is, isub["lengths"]), diff_vs_lm=diff, is_seconds=is_seconds,
                             ess_mean=float(est.ess.mean()))
        print(f"  {name:6s} {-elbo.mean():8.2f} {kl.mean():6.2f} {nll.mean():8.2f} ± {mean_se(nll)[1]:5.2f} "
              f"{ppl(nll, isub['lengths']):9.1f} {lm_is.mean():12.2f} {ppl(lm_is, isub['lengths']):7.1f} "
              f"{diff[0]:+8.2f} ± {diff[1]:5.2f}   (IS {is_seconds:.0f} s, mean ESS {float(est.ess.mean()):.0f})")

    # ---- the KL figure
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = {"gauss": "Gaussian, no annealing, no word dropout", "svae": f"vMF (kappa={args.kappa:g}), no annealing",
              "vae": "Gaussian, logistic KL annealing + word dropout"}
    for name, style in (("gauss", "C3-"), ("svae", "C0-"), ("vae", "C2--")):
        ax.plot(results[name]["kl_trace"], style, lw=1, label=labels[name])
    ax.set_xlabel(f"optimizer step (batch {args.batch_size}, {len(train_index)} PTB sentences, {args.epochs} epoch(s))")
    ax.set_ylabel("KL(q(z|x) || p(z)) per sentence (nats)")
    ax.set_yscale("symlog", linthresh=1)
    ax.legend(fontsize=8)
    ax.set_title("Training KL on PTB: the Gaussian collapses, the fixed-kappa vMF cannot", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.figure, dpi=120)
    print(f"figure: {args.figure}")

    # ---- samples and homotopies
    pairs = ((int(eval_index[0]), int(eval_index[1])), (int(eval_index[2]), int(eval_index[3])))
    lines = [f"# benchmarks/sentence_ptb.py: {len(train_index)} PTB training sentences, {args.epochs} epoch(s), "
             f"z {args.z_dim}, LSTM {args.hidden_dim}, device {device}"]
    for name in ("vae", "svae", "gauss"):
        model, guide, _ = trained[name]
        lines += text_report(name, model, guide, ptb.vocab, test, torch.Generator().manual_seed(args.seed),
                             pairs=pairs, device=device)
    lines.append("== lm: 8 samples (multinomial, not greedy: greedy decoding of the LM gives one sentence)")
    for row in lm.generate(num_samples=8, generator=torch.Generator(device=device).manual_seed(args.seed)).cpu():
        lines.append("  " + ptb.vocab.decode(row))
    with open(args.text, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"text: {args.text}")
    _harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
