"""jiacheng-xu/vmf_vae_nlp (Xu & Durrett's own code for the vMF sentence VAE), run unchanged at a
chosen budget on this suite's PTB data, and its checkpoint scored on the test sentences that
``benchmarks/sentence_ablation.py`` scores ours on: the reference of docs/text.md ("The vMF
sentence VAE against Xu & Durrett's code").

``data`` (in this suite's environment): writes the text files its ``DataLM`` loads
(``train.txt``, ``valid.txt``, ``test.txt``: one sentence a line, words split by spaces, PTB's
``<unk>`` kept as it is) from the suite's PTB split, with the training subset that
``sentence_ablation.py`` draws (``randperm(seed)[:train_size]``, sorted), the first
``--valid-size`` validation sentences, and all the test sentences; and ``eval.txt``, the
``--eval-sentences`` scored test sentences (a seed-0 permutation's first, sorted, as
``sentence_ablation.py``), one a line, in that order. Its ``DataLM`` builds its own dictionary
from the three files (``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then the words in order of
appearance); a sentence of one word is skipped by its loader (PTB's training subset has few).

``train`` (in the reference's ``NVLL`` folder, its environment): runs its ``nvll.py`` unchanged
with the arguments after ``--`` (``--root_path`` at the folder holding ``data/``), on one torch
thread. It seeds itself (``--seed`` for torch; numpy and ``random`` at 2018 at import). One
adaptation of its data loading: ``DataLM.set_batch`` returns its batches made contiguous. It
builds each batch as ``transpose(...).long()``, which was a contiguous copy under the PyTorch 0.4.1
it was written for and keeps the transposed strides in current PyTorch, where its
``target.view(-1)`` then fails.

``score`` (in an environment with torch, numpy, scipy and pyrovae; the reference's folder on
``--ref``): loads the checkpoint its ``Runner.end`` leaves (``<save_name>_<test loss>.model``
and ``.args``) with its ``RNNVAE`` and scores each sentence of ``eval.txt``, in eval mode (no
dropout), with three estimators:

- ``own``: its own objective per sentence: ``-log p(x | z̄) + KL`` with ``z̄`` the mean of its
  ``nsample`` vMF draws, as its ``forward`` trains and evaluates (``z̄`` lies inside the ball, not
  on the sphere), and its constant KL (Guu's formula, ``vMF._vmf_kld``);
- ``elbo``: one draw ``z ~ vMF(mu(x), kappa)`` on the sphere, ``log p(x | z) - KL`` with the exact
  KL to the uniform prior (pyrovae's ``VonMisesFisher`` / ``HypersphericalUniform``, the bound
  ours is scored with);
- ``is_ll``: the importance-sampled ``log p(x)`` with K draws of that vMF and the uniform prior on
  the sphere, on the first ``--is-sentences``.

Setup, in a scratch folder outside this repository:

    git --git-dir=VMF_VAE_NLP/.git archive 6459c62c3e6003187d88e5907a2b6e20cf915892 NVLL README.md LICENSE | tar -x
    python PATH/TO/benchmarks/vmf_vae_reference.py data --train-size 4000 --valid-size 200 --out data/ptb4k
    cp PATH/TO/benchmarks/vmf_vae_reference.py .
    cd NVLL && OMP_NUM_THREADS=1 nice -n 5 python ../vmf_vae_reference.py train -- --model nvrnn --data_name ptb \\
        --data_path data/ptb4k --root_path .. --exp_path ../exp --dist vmf --kappa 20 --lat_dim 16 --emsize 64 \\
        --nhid 128 --batch_size 32 --eval_batch_size 32 --epochs 3 --optim adam --lr 0.001 --dropout 0 \\
        --mix_unk 0 --aux_weight 0 --seed 0 --log_interval 25
    cd ..
    python vmf_vae_reference.py score --ref . --run exp/<save_name>_<loss> --data data/ptb4k \\
        --is-sentences 50 -K 100 --json ref.json                   # with pyrovae installed
    python vmf_vae_reference.py pair ref.json ours.json            # ours: sentence_ablation.py --json
"""
import argparse
import glob
import json
import math
import os
import sys


def data(argv):
    import torch
    from pyrovae.data import load_dataset

    p = argparse.ArgumentParser(prog="data")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--valid-size", type=int, default=200)
    p.add_argument("--eval-sentences", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data/ptb")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    ptb = load_dataset("ptb")

    def lines(split, index):
        x, lengths = split["x"][index], split["lengths"][index]
        # each row ends in <eos> (counted in its length); the reference appends its own
        return [ptb.vocab.decode(row[: n - 1], stop_at_eos=False) for row, n in zip(x.tolist(), lengths.tolist())]

    n_train = len(ptb.train["lengths"])
    train_index = torch.randperm(n_train, generator=torch.Generator().manual_seed(a.seed))[: a.train_size or n_train]
    n_test = len(ptb.test["lengths"])
    eval_index = torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[: a.eval_sentences].sort().values
    files = {"train.txt": lines(ptb.train, train_index.sort().values),
             "valid.txt": lines(ptb.valid, torch.arange(min(a.valid_size, len(ptb.valid["lengths"])))),
             "test.txt": lines(ptb.test, torch.arange(n_test)),
             "eval.txt": lines(ptb.test, eval_index)}
    for name, rows in files.items():
        with open(os.path.join(a.out, name), "w") as f:
            f.write("".join(f" {row} \n" for row in rows))
        print(name, len(rows), "sentences,", sum(len(r.split()) + 1 for r in rows), "tokens with <eos>")
    json.dump({"eval_index": eval_index.tolist(), "train_size": a.train_size, "seed": a.seed},
              open(os.path.join(a.out, "index.json"), "w"))


def train(argv):
    import runpy
    import torch

    argv = [a for a in argv if a != "--"]
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.getcwd()))  # the folder holding NVLL/
    from NVLL.data.lm import DataLM

    set_batch = DataLM.set_batch
    DataLM.set_batch = lambda self, *a, **k: [b.contiguous() for b in set_batch(self, *a, **k)]
    sys.argv = ["nvll.py", *argv]
    runpy.run_path("nvll.py", run_name="__main__")


def score(argv):
    import numpy
    import torch

    p = argparse.ArgumentParser(prog="score")
    p.add_argument("--ref", default=".", help="the reference's folder (holding NVLL/)")
    p.add_argument("--run", required=True, help="the checkpoint's path without .model/.args")
    p.add_argument("--data", required=True, help="the folder `data` wrote (relative to --ref)")
    p.add_argument("--is-sentences", type=int, default=50)
    p.add_argument("-K", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.abspath(a.ref))
    from NVLL.data.lm import DataLM
    from NVLL.model.nvrnn import RNNVAE
    from pyrovae.distributions import HypersphericalUniform, VonMisesFisher

    run = a.run if os.path.exists(a.run + ".model") else glob.glob(a.run + "*.model")[0][: -len(".model")]
    args = torch.load(run + ".args", weights_only=False)
    folder = os.path.join(a.ref, a.data)
    corpus = DataLM(folder, args.batch_size, args.eval_batch_size, condition=False)  # its dictionary, rebuilt
    w2i = corpus.dictionary.word2idx
    model = RNNVAE(args, args.enc_type, len(corpus.dictionary), args.emsize, args.nhid, args.lat_dim, args.nlayers,
                   dropout=args.dropout, tie_weights=args.tied, input_z=args.input_z, mix_unk=args.mix_unk,
                   condition=False, input_cd_bow=args.cd_bow, input_cd_bit=args.cd_bit)
    model.load_state_dict(torch.load(run + ".model", map_location="cpu"), strict=False)
    model.eval()
    model.FLAG_train = False
    sentences = [line.split() + ["<eos>"] for line in open(os.path.join(folder, "eval.txt"))]
    d, kappa = args.lat_dim, float(args.kappa)

    def tensors(words, copies=1):
        target = torch.tensor([w2i[w] for w in words]).unsqueeze(1).expand(-1, copies)  # (T, copies)
        feed = torch.cat([torch.ones(1, copies, dtype=torch.long), target[:-1]])  # <eos> (1) starts, as its get_feed
        return feed, target

    @torch.no_grad()
    def log_px(feed, target, z):  # (copies,)
        logits = model.forward_decode_ground(model.emb(feed), z)
        return torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(0)

    @torch.no_grad()
    def posterior(feed):
        mu = model.dist.estimate_param(model.forward_enc(model.emb(feed)))["mu"]
        return mu

    torch.manual_seed(a.seed), numpy.random.seed(a.seed)
    prior = HypersphericalUniform(d, (1,))
    kl_exact = None
    own, elbo, is_ll = [], [], []
    for i, words in enumerate(sentences):
        feed, target = tensors(words)
        mu = posterior(feed)  # (1, d), unit norm
        q = VonMisesFisher(mu, torch.full((1,), kappa))
        if kl_exact is None:
            kl_exact = float(torch.distributions.kl_divergence(q, prior)[0])
        draws = model.dist.build_bow_rep(model.forward_enc(model.emb(feed)), args.nsample)[2]  # its own draws
        own.append(float(log_px(feed, target, draws.mean(0))) - float(model.dist.kld[0]))
        elbo.append(float(log_px(feed, target, q.sample())) - kl_exact)
        if i < a.is_sentences:
            feed_k, target_k = tensors(words, a.K)
            z = q.sample((a.K,)).squeeze(1)  # (K, d)
            lw = log_px(feed_k, target_k, z) + prior.log_prob(z) - q.log_prob(z.unsqueeze(1)).squeeze(1)
            is_ll.append(float(torch.logsumexp(lw, 0) - math.log(a.K)))

    def mean_se(v):
        t = torch.tensor(v)
        return [float(t.mean()), float(t.std() / math.sqrt(len(t)))]

    res = {"run": run, "vocab_size": len(corpus.dictionary), "kappa": kappa, "z_dim": d, "nsample": args.nsample,
           "kl_own": float(model.dist.kld[0]), "kl_exact": kl_exact, "neg_own": [-x for x in mean_se(own)][:1] + mean_se(own)[1:],
           "neg_elbo": [-mean_se(elbo)[0], mean_se(elbo)[1]], "is_nll": [-mean_se(is_ll)[0], mean_se(is_ll)[1]],
           "tokens": sum(len(w) for w in sentences),
           "per_sentence": {"own": own, "elbo": elbo, "is_ll": is_ll}}
    print(f"{len(sentences)} sentences ({res['tokens']} tokens), vocabulary {res['vocab_size']}: its own objective "
          f"{res['neg_own'][0]:.2f}, -ELBO {res['neg_elbo'][0]:.2f} (KL {kl_exact:.2f}; its formula {res['kl_own']:.2f}), "
          f"IS NLL {res['is_nll'][0]:.2f} (K={a.K}, {len(is_ll)} sentences)")
    if a.json:
        json.dump(res, open(a.json, "w"))


def pair(argv):
    """Paired differences (ours - reference) per scored sentence: ``pair REF.json OURS.json``, the
    second written by ``sentence_ablation.py --json`` (one line per config)."""
    p = argparse.ArgumentParser(prog="pair")
    p.add_argument("reference")
    p.add_argument("ours")
    a = p.parse_args(argv)
    ref, ours = json.load(open(a.reference)), json.load(open(a.ours))

    def diff(x, y):
        d = [u - v for u, v in zip(x, y)]
        m = sum(d) / len(d)
        return m, math.sqrt(sum((v - m) ** 2 for v in d) / (len(d) - 1) / len(d))

    for row in ours["rows"]:
        mine = row["per_sentence"]
        e = diff([-v for v in mine["elbo"]], [-v for v in ref["per_sentence"]["elbo"]])
        n = len(ref["per_sentence"]["is_ll"])
        i = diff([-v for v in mine["is_ll"][:n]], [-v for v in ref["per_sentence"]["is_ll"]])
        print(f"{row['name']:14s} -ELBO - reference's {e[0]:+.2f} ± {e[1]:.2f} ({len(mine['elbo'])} sentences); "
              f"IS NLL - reference's {i[0]:+.2f} ± {i[1]:.2f} ({n} sentences)")


if __name__ == "__main__":
    commands = {"data": data, "train": train, "score": score, "pair": pair}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])
