"""timbmg/Sentence-VAE (a PyTorch sentence VAE after Bowman et al.), run unchanged at a chosen
budget on this suite's PTB data, and its checkpoint scored on the test sentences that
``benchmarks/sentence_ablation.py`` scores ours on: the reference of docs/text.md ("Against a
reference implementation at equal budget").

``data`` (in this suite's environment): writes the preprocessed files the reference's ``PTB``
class loads (``ptb.{train,valid,test}.json``, ``ptb.vocab.json``) from the suite's PTB split, so
both see the same tokens, the same ids (``<pad>`` 0, ``<sos>`` 1, ``<eos>`` 2, ``<unk>`` 3) and the
same training subset (``randperm(seed)[:train_size]``, sorted, as ``sentence_ablation.py`` draws).
Its own tokenizer (nltk's ``TweetTokenizer`` over the raw text) is not used: it splits PTB's
``<unk>`` into three tokens and would give another vocabulary.

``train`` (in the reference's folder and environment): seeds torch and numpy (its ``train.py``
seeds nothing), sets one torch thread and runs its ``train.py`` unchanged with the arguments
after ``--``.

``score`` (same): loads a checkpoint with its ``model.py`` and scores it with the estimators of
``sentence_ablation.py``: per-sentence ELBO (one draw of q) and closed-form KL on
``--eval-sentences`` test sentences (a seed-0 permutation's first, sorted), and the
importance-sampled log-likelihood with K draws of q on the first ``--is-sentences``; in eval mode,
without word dropout (its ``forward`` would apply word dropout in eval mode too). Its
``log p(x | z)`` equals its own training loss on a batch.

Setup, in a scratch folder outside this repository (torch, numpy, nltk, tensorboardX):

    git --git-dir=SENTENCE-VAE/.git archive 4e2c7009ff36677c40d0b252400f68a5ea114078 | tar -x
    cp PATH/TO/benchmarks/sentence_vae_reference.py .
    python sentence_vae_reference.py data --train-size 4000 --valid-size 200 --out data4k   # with pyrovae
    OMP_NUM_THREADS=1 python sentence_vae_reference.py train --seed 0 -- --data_dir data4k --epochs 3 -bs 32 \
        -lr 0.001 -eb 64 -hs 128 -ls 16 -wd 0.3 -ed 0.5 -af logistic -k 0.04 -x0 125 -v 25 -bin bin_ed0.5
    python sentence_vae_reference.py score bin_ed0.5/<run> 2 --data data4k --eval-sentences 1000 \
        --is-sentences 50 -K 100 --json ref.json
"""
import argparse
import json
import math
import os
import sys


def data(argv):
    import torch
    from pyrovae.data import load_dataset

    p = argparse.ArgumentParser(prog='data')
    p.add_argument("--train-size", type=int, default=8000)
    p.add_argument("--valid-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    ptb = load_dataset("ptb")
    tokens = list(ptb.vocab.tokens) if hasattr(ptb.vocab, "tokens") else [ptb.vocab.decode([i]) for i in range(len(ptb.vocab))]
    names = {0: "<pad>", 1: "<sos>", 2: "<eos>", 3: "<unk>"}
    i2w = {str(i): names.get(i, t) for i, t in enumerate(tokens)}
    w2i = {w: int(i) for i, w in i2w.items()}
    assert len(w2i) == len(i2w) == len(ptb.vocab)
    json.dump({"w2i": w2i, "i2w": i2w}, open(os.path.join(a.out, "ptb.vocab.json"), "w"))

    g = torch.Generator().manual_seed(a.seed)
    n_train = len(ptb.train["lengths"])
    train_index = torch.randperm(n_train, generator=g)[: a.train_size or n_train].sort().values
    for split, data, index in (("train", ptb.train, train_index),
                               ("valid", ptb.valid, torch.arange(min(a.valid_size or 10**9, len(ptb.valid["lengths"])))),
                               ("test", ptb.test, torch.arange(len(ptb.test["lengths"])))):
        x, lengths = data["x"][index], data["lengths"][index]
        width = int(lengths.max())
        out = {}
        for i, (row, n) in enumerate(zip(x.tolist(), lengths.tolist())):
            target = row[:n] + [0] * (width - n)
            inp = ([1] + row[: n - 1]) + [0] * (width - n)
            out[str(i)] = {"input": inp, "target": target, "length": n}
        json.dump(out, open(os.path.join(a.out, f"ptb.{split}.json"), "w"))
        print(split, len(out), "sentences,", int(lengths.sum()), "tokens (with <eos>), width", width)

def train(argv):
    import numpy
    import runpy
    import torch

    p = argparse.ArgumentParser(prog="train")
    p.add_argument("--seed", type=int, default=0)
    a, rest = p.parse_known_args(argv)
    rest = [r for r in rest if r != "--"]
    torch.manual_seed(a.seed), numpy.random.seed(a.seed), torch.set_num_threads(1)
    sys.argv = ["train.py", *rest]
    sys.path.insert(0, os.getcwd())
    runpy.run_path("train.py", run_name="__main__")


def score(argv):
    import torch
    import torch.nn.utils.rnn as rnn_utils
    sys.path.insert(0, os.getcwd())
    from model import SentenceVAE

    p = argparse.ArgumentParser(prog="score")
    p.add_argument("run")
    p.add_argument("epoch", type=int)
    p.add_argument("--data", default="data4k")
    p.add_argument("--eval-sentences", type=int, default=1000)
    p.add_argument("--is-sentences", type=int, default=100)
    p.add_argument("-K", type=int, default=100)
    p.add_argument("--json")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    params = json.load(open(os.path.join(a.run, "model_params.json")))
    model = SentenceVAE(**params)
    model.load_state_dict(torch.load(os.path.join(a.run, f"E{a.epoch}.pytorch"), map_location="cpu"))
    model.eval()
    test = json.load(open(os.path.join(a.data, "ptb.test.json")))
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: a.eval_sentences].sort().values

    def batch(rows):
        n = max(test[str(int(i))]["length"] for i in rows)
        inp = torch.tensor([test[str(int(i))]["input"][:n] for i in rows])
        tgt = torch.tensor([test[str(int(i))]["target"][:n] for i in rows])
        length = torch.tensor([test[str(int(i))]["length"] for i in rows])
        return inp, tgt, length

    @torch.no_grad()
    def encode(inp, length):
        emb = model.embedding(inp)
        packed = rnn_utils.pack_padded_sequence(emb, length.tolist(), batch_first=True, enforce_sorted=False)
        _, hidden = model.encoder_rnn(packed)
        hidden = hidden.squeeze(0)
        return model.hidden2mean(hidden), model.hidden2logv(hidden)

    @torch.no_grad()
    def log_px(inp, tgt, length, z):
        """log p(x | z) per row (z rows align with inp rows)."""
        hidden = model.latent2hidden(z).unsqueeze(0)
        emb = model.embedding(inp)
        packed = rnn_utils.pack_padded_sequence(emb, length.tolist(), batch_first=True, enforce_sorted=False)
        out, _ = model.decoder_rnn(packed, hidden)
        out = rnn_utils.pad_packed_sequence(out, batch_first=True, total_length=inp.shape[1])[0]
        logp = torch.log_softmax(model.outputs2vocab(out), -1)
        ll = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        mask = torch.arange(inp.shape[1])[None] < length[:, None]
        return (ll * mask).sum(1)

    def normal_lp(z, mean, logv):
        return (-0.5 * ((z - mean) ** 2 / logv.exp() + logv + math.log(2 * math.pi))).sum(-1)

    torch.manual_seed(a.seed)
    elbos, kls, lls = [], [], []
    for s in range(0, len(index), 100):
        inp, tgt, length = batch(index[s:s + 100])
        mean, logv = encode(inp, length)
        z = mean + torch.randn_like(mean) * (0.5 * logv).exp()
        kl = -0.5 * (1 + logv - mean.pow(2) - logv.exp()).sum(1)
        elbos.append(log_px(inp, tgt, length, z) - kl); kls.append(kl)
    for i in index[: a.is_sentences]:
        inp, tgt, length = batch([i])
        mean, logv = encode(inp, length)
        z = mean + torch.randn(a.K, mean.shape[1]) * (0.5 * logv).exp()
        R = a.K
        lw = log_px(inp.expand(R, -1), tgt.expand(R, -1), length.expand(R), z) + normal_lp(z, 0 * z, 0 * z) - normal_lp(z, mean, logv)
        lls.append(torch.logsumexp(lw, 0) - math.log(R))
    elbo, kl, ll = torch.cat(elbos), torch.cat(kls), torch.stack(lls)
    tokens = float(sum(test[str(int(i))]["length"] for i in index))
    res = {"run": a.run, "epoch": a.epoch, "neg_elbo": -float(elbo.mean()), "neg_elbo_se": float(elbo.std() / math.sqrt(len(elbo))),
           "kl": float(kl.mean()), "ppl_elbo": math.exp(-float(elbo.sum()) / tokens),
           "is_nll": [-float(ll.mean()), float(ll.std() / math.sqrt(len(ll)))],
           "per_sentence": {"elbo": elbo.tolist(), "kl": kl.tolist(), "is_ll": ll.tolist()}, "eval_index": index.tolist()}
    print(f"-ELBO {res['neg_elbo']:.2f} KL {res['kl']:.2f} IS NLL {res['is_nll'][0]:.2f} (K={a.K}, {len(ll)} sentences)")
    if a.json:
        json.dump(res, open(a.json, "w"))


if __name__ == "__main__":
    commands = {"data": data, "train": train, "score": score}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])
