"""The sentence VAE against a reference implementation at equal budget, and one-change ablations.

Trains ``pyrovae``'s sentence VAE (models/sentence.py, guide ``sentence``) once per ``--configs``
entry on the same PTB training subset (``--train-size`` sentences drawn with ``--seed``, the
subset benchmarks/sentence_ptb.py draws), ``--epochs`` of length-bucketed batches of
``--batch-size``, and scores every run on the same test sentences: ``--eval-sentences`` drawn at
random (seed 0; the first ``--is-sentences`` of them for importance sampling):

- per-sentence ELBO (one draw of q) and KL(q(z|x) || p(z)) in closed form, eval mode (no word or
  embedding dropout);
- the importance-sampled log-likelihood with K = ``--num-samples``.

A config is ``name:key=value,key=value`` over the base settings (the flags): ``anneal``
(``logistic``: Bowman et al.'s schedule, weight ``1/(1+exp(-k (step - x0)))`` with ``k = 10 /
anneal_steps`` and ``x0 = anneal_steps / 2``, as timbmg/Sentence-VAE's ``-af logistic -k -x0``;
``linear``: the objective's ``warmup_steps``; ``none``), ``anneal_steps``, ``word_dropout``,
``embed_dropout``, ``lr``, ``init`` (``torch``; ``burda``: Glorot and the output bias at the
training tokens' log frequencies, fit's default for the sentence models; ``bias``: torch's
weights and that bias), ``embed_dim``, ``z_every_step``, ``objective`` (``elbo``: sampled KL;
``meanfield``: the KL in closed form), ``model`` (``vae``: the Gaussian sentence VAE; ``svae``:
Xu & Durrett's spherical one, guide ``sentence-vmf``) and ``kappa`` (its fixed concentration).
Per-sentence figures go to the JSON, so that another implementation scored on the same sentences
(the references' evaluation shims, docs/text.md) pairs with them.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/sentence_ablation.py --configs base \\
        "edrop:embed_dropout=0.5" --json ablation.json
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pyro
import torch
import _harness  # benchmarks/_harness.py
from sentence_ptb import RecordingELBO, SigmoidAnnealedELBO, elbo_and_kl, mean_se, subset

from torch.distributions import kl_divergence

from pyrovae import fit, log_likelihood
from pyrovae.data import load_dataset
from pyrovae.guides.sentence import SentenceGuide, SentenceVMFGuide
from pyrovae.infer.objectives import MeanFieldELBO
from pyrovae.models.sentence import SentenceVAE, SphericalSentenceVAE

KEYS = {"anneal": str, "anneal_steps": int, "word_dropout": float, "embed_dropout": float, "lr": float, "init": str,
        "embed_dim": int, "hidden_dim": int, "z_dim": int, "z_every_step": lambda v: v in ("1", "true", "True"),
        "objective": str, "model": str, "kappa": float}


class RecordingMeanField(MeanFieldELBO):
    """The closed-form-KL ELBO recording the KL per sentence (as :class:`RecordingELBO`)."""

    def __init__(self, anneal_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.anneal_steps, self.kl_trace, self.weight_trace = anneal_steps, [], []

    kl_weight = SigmoidAnnealedELBO.kl_weight

    def __call__(self, model, guide, batch, step=None):
        loss = super().__call__(model, guide, batch, step)
        if torch.is_grad_enabled():
            with torch.no_grad():
                q = guide.encode(batch["x"], batch.get("mask"))
                self.kl_trace.append(float(kl_divergence(q, model.prior(batch["x"].shape[0])).mean()))
                self.weight_trace.append(self.kl_weight(step))
        return loss


def parse_config(text: str, base: dict) -> tuple:
    name, _, rest = text.partition(":")
    config = dict(base)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"unknown config key {key!r}; known: {', '.join(KEYS)}")
        config[key] = KEYS[key](value)
    return name, config


def objective_for(config: dict):
    anneal, steps = config["anneal"], config["anneal_steps"]
    if config["objective"] == "meanfield":
        return RecordingMeanField(anneal_steps=steps if anneal == "logistic" else 0)
    if anneal == "logistic":
        return SigmoidAnnealedELBO(steps)
    if anneal == "linear":
        return RecordingELBO(warmup_steps=steps)
    return RecordingELBO()


def eval_indices(n_test: int, eval_sentences: int) -> torch.Tensor:
    """The scored test sentences: a seed-0 permutation's first ``eval_sentences``, sorted (the
    reference's shim draws the same)."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[:eval_sentences].sort().values


def main():
    p = _harness.parser(__doc__.splitlines()[0], train_size=4000, epochs=3, batch_size=32, lr=1e-3, z_dim=16,
                        num_samples=100, seed=0, threads=1, json=None)
    p.add_argument("--configs", nargs="+", default=["base"])
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--word-dropout", type=float, default=0.3)
    p.add_argument("--embed-dropout", type=float, default=0.0)
    p.add_argument("--anneal", choices=("logistic", "linear", "none"), default="logistic")
    p.add_argument("--anneal-steps", type=int, default=0, help="0: two thirds of the training steps")
    p.add_argument("--init", choices=("torch", "burda", "bias"), default="torch")
    p.add_argument("--objective", choices=("elbo", "meanfield"), default="elbo")
    p.add_argument("--model", choices=("vae", "svae"), default="vae")
    p.add_argument("--kappa", type=float, default=20.0, help="the vMF guide's fixed concentration (model svae)")
    p.add_argument("--eval-sentences", type=int, default=1000)
    p.add_argument("--is-sentences", type=int, default=100)
    args = p.parse_args()
    machine = _harness.start(args)

    ptb = load_dataset("ptb")
    g = torch.Generator().manual_seed(args.seed)
    n_train = len(ptb.train["lengths"])
    train_index = torch.randperm(n_train, generator=g)[: args.train_size or n_train].sort().values
    import dataclasses
    data = dataclasses.replace(ptb, train=subset(ptb.train, train_index))
    steps = len(data.bucketed("train", args.batch_size)) * args.epochs
    base = {k: getattr(args, k) for k in KEYS if k not in ("z_every_step",)}
    base.update(z_every_step=False, anneal_steps=args.anneal_steps or round(2 * steps / 3))
    index = eval_indices(len(ptb.test["lengths"]), args.eval_sentences)
    ev, isub = subset(ptb.test, index), subset(ptb.test, index[: args.is_sentences])
    print(f"{machine}; {len(train_index)} training sentences, {args.epochs} epochs, {steps} steps; "
          f"scored on {len(index)} test sentences (IS K={args.num_samples} on {args.is_sentences})", flush=True)
    rows = []
    for text in args.configs:
        name, c = parse_config(text, base)
        pyro.clear_param_store()
        torch.manual_seed(args.seed)
        sizes = dict(vocab_size=len(ptb.vocab), z_dim=c["z_dim"], embed_dim=c["embed_dim"], hidden_dim=c["hidden_dim"])
        if c["model"] not in ("vae", "svae"):
            raise SystemExit(f"model must be vae or svae, got {c['model']!r}")
        spherical = c["model"] == "svae"
        model = (SphericalSentenceVAE if spherical else SentenceVAE)(
            **sizes, word_dropout=c["word_dropout"], embed_dropout=c["embed_dropout"], z_every_step=c["z_every_step"])
        guide = SentenceVMFGuide(**sizes, fixed_kappa=c["kappa"]) if spherical else SentenceGuide(**sizes)
        if spherical and c["objective"] == "meanfield":
            raise SystemExit("objective=meanfield is for the Gaussian model (the vMF's KL is the closed form anyway)")
        objective = objective_for(c)
        init = c["init"]
        if init == "bias":
            model.init_from_data(**data.train)
            init = "torch"
        cpu0, t0 = time.process_time(), time.perf_counter()
        fit(model, guide, data.bucketed("train", args.batch_size, seed=args.seed), objective=objective,
            epochs=args.epochs, lr=c["lr"], seed=args.seed, progress=False, init=init, cuda_graphs=False)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        elbo, kl = elbo_and_kl(model, guide, ev)
        pyro.set_rng_seed(args.seed)
        est = log_likelihood(model, guide, isub, num_samples=args.num_samples, batch_size=4, max_pass=4000)
        ll = est.per_datapoint.cpu()
        tokens = float(ev["lengths"].sum())
        row = {"name": name, "config": c, "steps": steps, "cpu_seconds": cpu, "wall_seconds": wall,
               "cpu_seconds_per_epoch": cpu / args.epochs, "neg_elbo": -float(elbo.mean()),
               "neg_elbo_se": float(elbo.std() / math.sqrt(len(elbo))), "kl": float(kl.mean()),
               "ppl_elbo": math.exp(-float(elbo.sum()) / tokens), "is_nll": mean_se(-ll),
               "kl_last_steps": sum(objective.kl_trace[-20:]) / max(1, len(objective.kl_trace[-20:])), "kl_trace": objective.kl_trace[::5],
               "per_sentence": {"elbo": elbo.tolist(), "kl": kl.tolist(), "is_ll": ll.tolist()}}
        rows.append(row)
        print(f"{name:14s} -ELBO {row['neg_elbo']:7.2f} KL {row['kl']:6.2f} IS NLL {row['is_nll'][0]:7.2f} "
              f"(K={args.num_samples}, {len(ll)} sent.) train KL last 20 steps {row['kl_last_steps']:.2f}; "
              f"{cpu:.0f} s CPU ({wall:.0f} s wall)", flush=True)
        _harness.write_json(args.json, {"machine": machine, "args": vars(args), "eval_index": index.tolist(),
                                        "rows": rows})


if __name__ == "__main__":
    main()
