"""The RNN semantic seq2seq VAE (Jang, Seo, Kang 2018/2019) against the same seq2seq network
without z, on continuing PTB sentences (``ptb-continue``: source the first half of each
sentence's words, target the rest and ``<eos>``).

Trains, in the same run at the same budget (``--train-size`` pairs drawn with ``--seed``,
``--epochs``, length-bucketed batches of ``--batch-size``, Adam ``--lr``, the same batch order):

- ``seq2seq``: the deterministic baseline (models/seq2seq.py, Seq2Seq: decoder started from the
  semantic vector v(s) alone);
- ``vae``: Seq2SeqVAE with the conditional prior p(z | s) from v(s), guide q(z | s, t), a linear
  KL warm-up over ``--warmup`` steps (0: the first half of training) and word dropout
  ``--word-dropout`` on the decoder's inputs.

Then on PTB test: the baseline's exact NLL per target and perplexity on all test pairs; the VAE's
ELBO and KL(q(z|s,t) || p(z|s)) on ``--eval-sentences`` pairs; its importance-sampled NLL
(K = ``--num-samples``) on ``--is-sentences`` pairs drawn at random, paired with the baseline's
exact NLL on the same pairs (mean difference +- its standard error); greedy continuations of a
few test sources (``--text``).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/seq2seq_ptb.py      # the docs/text.md figures
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import pyro
import torch
import _harness  # benchmarks/_harness.py
from torch.distributions import kl_divergence

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.guides.seq2seq import Seq2SeqGuide
from pyrovae.infer.objectives import ELBO
from pyrovae.models.sentence import decoder_inputs
from pyrovae.models.seq2seq import Seq2Seq, Seq2SeqVAE, _code, no_latents

PAIR_KEYS = ("x", "mask", "source", "source_mask")


class ZeroZStart(Seq2SeqVAE):
    """The VAE whose decoder starts blind to z: the z columns of its initial-state layer at 0."""

    def init_from_data(self, *args, **kwargs):
        super().init_from_data(*args, **kwargs)
        with torch.no_grad():
            self.decoder.init.weight[:, -self.z_dim:] = 0


def subset(split: dict, index: torch.Tensor) -> dict:
    rows = {k: v[index] for k, v in split.items()}
    t, s = int(rows["lengths"].max()), int(rows["source_lengths"].max())
    return {k: (v[:, :t] if k in ("x", "mask") else v[:, :s] if k in ("source", "source_mask") else v)
            for k, v in rows.items()}


def chunks(data: dict, batch_size: int = 200):
    n = len(data["lengths"])
    for start in range(0, n, batch_size):
        yield subset(data, torch.arange(start, min(start + batch_size, n)))


@torch.no_grad()
def baseline_log_prob(net, data):
    net.eval()
    return torch.cat([net.log_prob(*(b[k] for k in PAIR_KEYS)) for b in chunks(data)])


@torch.no_grad()
def elbo_and_kl(model, guide, data):
    model.eval(), guide.eval()
    elbos, kls = [], []
    for b in chunks(data):
        q = guide.encode(*(b[k] for k in PAIR_KEYS))
        v = model.semantic_vector(b["source"], b["source_mask"])
        z = q.rsample()
        log_px = model.decoder.likelihood(decoder_inputs(b["x"]), b["mask"], _code(v, z)).log_prob(b["x"])
        kl = kl_divergence(q, model.prior_given(v))
        elbos.append(log_px - kl), kls.append(kl)
    return torch.cat(elbos), torch.cat(kls)


def ppl(nll, lengths) -> float:
    return math.exp(float(nll.sum()) / float(lengths.sum()))


def mean_se(values) -> tuple:
    return float(values.mean()), float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def main():
    parser = _harness.parser(__doc__.splitlines()[0], train_size=4000, epochs=1, batch_size=32, lr=2e-3, z_dim=16,
                             num_samples=1000, seed=0, json=None)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--encoder-dim", type=int, default=64)
    parser.add_argument("--word-dropout", type=float, default=0.25)
    parser.add_argument("--warmup", type=int, default=None,
                        help="KL warm-up steps (default: half the training steps; 0: none)")
    parser.add_argument("--is-sentences", type=int, default=30)
    parser.add_argument("--eval-sentences", type=int, default=1000)
    parser.add_argument("--max-pass", type=int, default=250)
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--init", choices=("torch", "glorot", "burda"), default=None,
                        help="the weights' start (default: fit's, burda: the output bias at the token frequencies)")
    parser.add_argument("--text", default=None, help="write the decoded examples here too")
    parser.add_argument("--z-start", choices=("init", "zero"), default="init",
                        help="zero: the VAE decoder's weights from z to its initial state start at 0 (after the "
                             "start --init gives), so the untrained VAE is the baseline's network")
    parser.add_argument("--baseline-state", default=None,
                        help="the trained baseline's weights: loaded from this file if it exists, else saved there "
                             "(for ablations that change only the VAE: the baseline is deterministic)")
    args = parser.parse_args()

    data = load_dataset("ptb-continue")
    vocab, test = data.vocab, data.test
    g = torch.Generator().manual_seed(args.seed)
    n_train = len(data.train["lengths"])
    train_index = torch.randperm(n_train, generator=g)[: args.train_size or n_train].sort().values
    data = dataclasses.replace(data, train={k: v[train_index] for k, v in data.train.items()})
    n_test = len(test["lengths"])
    eval_index = torch.randperm(n_test, generator=g)[: args.eval_sentences or n_test].sort().values
    is_index = eval_index[: args.is_sentences]
    steps = len(data.bucketed("train", args.batch_size)) * args.epochs
    warmup = max(1, steps // 2) if args.warmup is None else args.warmup
    sizes = dict(vocab_size=len(vocab), embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                 encoder_dim=args.encoder_dim)
    print(f"threads {torch.get_num_threads()}; {len(train_index)} training pairs "
          f"({int(data.train['lengths'].sum())} target tokens), {args.epochs} epoch(s), batch {args.batch_size} "
          f"({steps} steps), lr {args.lr}, z {args.z_dim}, embed {args.embed_dim}, decoder LSTM {args.hidden_dim}, "
          f"encoder biLSTM {args.encoder_dim}x2, KL warm-up {warmup} steps, word dropout {args.word_dropout}")

    runs = {
        "seq2seq": (lambda: Seq2Seq(**sizes, word_dropout=args.word_dropout), lambda: no_latents, lambda: ELBO()),
        "vae": (lambda: (ZeroZStart if args.z_start == "zero" else Seq2SeqVAE)(**sizes, z_dim=args.z_dim, word_dropout=args.word_dropout),
                lambda: Seq2SeqGuide(**sizes, z_dim=args.z_dim), lambda: ELBO(warmup_steps=warmup)),
    }
    trained, results = {}, {"args": vars(args), "steps": steps}
    for name, (make_model, make_guide, make_objective) in runs.items():
        pyro.clear_param_store()
        torch.manual_seed(args.seed)
        model, guide = make_model(), make_guide()
        if name == "seq2seq" and args.baseline_state and os.path.exists(args.baseline_state):
            saved = torch.load(args.baseline_state)
            model.load_state_dict(saved["state"])
            trained[name], results[name] = (model, guide), saved["results"]
            print(f"{name:8s} loaded from {args.baseline_state}")
            continue
        t0 = time.perf_counter()
        out = fit(model, guide, data.bucketed("train", args.batch_size, seed=args.seed), objective=make_objective(),
                  epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False, init=args.init)
        seconds = time.perf_counter() - t0
        trained[name] = (model, guide)
        results[name] = {"seconds": seconds, "train_loss": [m["train_loss"] for m in out.metrics]}
        if name == "seq2seq" and args.baseline_state:
            torch.save({"state": model.state_dict(), "results": results[name]}, args.baseline_state)
        print(f"{name:8s} trained in {seconds:.0f} s ({seconds / args.epochs:.1f} s/epoch); train loss per epoch "
              f"{[round(x, 2) for x in results[name]['train_loss']]}")

    net = trained["seq2seq"][0]
    base = -baseline_log_prob(net, test)
    results["seq2seq"].update(nll=float(base.mean()), ppl=ppl(base, test["lengths"]))
    print(f"\nPTB test continuations ({n_test} pairs, {int(test['lengths'].sum())} target tokens incl. <eos>):")
    print(f"  seq2seq (no z) exact: NLL {base.mean():.2f} nats/target, perplexity {ppl(base, test['lengths']):.1f}")
    model, guide = trained["vae"]
    ev, isub = subset(test, eval_index), subset(test, is_index)
    elbo, kl = elbo_and_kl(model, guide, ev)
    base_ev = -baseline_log_prob(net, ev)
    print(f"  vae on {len(eval_index)} pairs: -ELBO {-elbo.mean():.2f}, KL(q(z|s,t) || p(z|s)) {kl.mean():.2f}; "
          f"seq2seq on the same: NLL {base_ev.mean():.2f}; paired -ELBO - NLL {mean_se(-elbo - base_ev)[0]:+.2f} "
          f"± {mean_se(-elbo - base_ev)[1]:.2f}")
    pyro.set_rng_seed(args.seed)
    t0 = time.perf_counter()
    est = log_likelihood(model, guide, isub, num_samples=args.num_samples, batch_size=1, max_pass=args.max_pass)
    is_seconds = time.perf_counter() - t0
    nll, base_is = -est.per_datapoint, -baseline_log_prob(net, isub)
    diff = mean_se(nll - base_is)
    results["vae"].update(neg_elbo=float(-elbo.mean()), kl=float(kl.mean()), is_nll=mean_se(nll),
                          is_ppl=ppl(nll, isub["lengths"]), seq2seq_nll_same=float(base_is.mean()),
                          seq2seq_ppl_same=ppl(base_is, isub["lengths"]), diff=diff, is_seconds=is_seconds,
                          ess_mean=float(est.ess.mean()))
    print(f"  K={args.num_samples} IS on {len(is_index)} of them ({int(isub['lengths'].sum())} tokens): vae NLL "
          f"{nll.mean():.2f} ± {mean_se(nll)[1]:.2f} (ppl {ppl(nll, isub['lengths']):.1f}), seq2seq on the same "
          f"{base_is.mean():.2f} (ppl {ppl(base_is, isub['lengths']):.1f}); paired vae - seq2seq "
          f"{diff[0]:+.2f} ± {diff[1]:.2f} nats/target (IS {is_seconds:.0f} s, mean ESS {float(est.ess.mean()):.0f})")

    lines = ["== greedy continuations of PTB test sources"]
    ex = subset(test, eval_index[: args.examples])
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        model.eval()
        from_base = net.generate(ex["source"], ex["source_mask"], greedy=True)
        from_mean = model.generate(ex["source"], ex["source_mask"], greedy=True, mean=True)
        draws = [model.generate(ex["source"], ex["source_mask"], greedy=True, generator=gen) for _ in range(2)]
    for i in range(len(ex["lengths"])):
        lines.append(f"  source : {vocab.decode(ex['source'][i][ex['source_mask'][i]])}")
        lines.append(f"  truth  : {vocab.decode(ex['x'][i])}")
        lines.append(f"  seq2seq: {vocab.decode(from_base[i])}")
        lines.append(f"  vae z=E[z|s]: {vocab.decode(from_mean[i])}")
        for j, d in enumerate(draws):
            lines.append(f"  vae z~p(z|s) #{j + 1}: {vocab.decode(d[i])}")
    print("\n".join(lines))
    if args.text:
        with open(args.text, "w") as f:
            f.write("\n".join(lines) + "\n")
    _harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
