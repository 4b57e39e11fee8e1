"""The RNN semantic seq2seq VAE (Jang, Seo, Kang 2018/2019) and its deterministic baseline: padding
of the source and of the target never changes the loss, the attention's semantic vector written
out by hand, the baseline as the VAE's network with z removed, the continuation pairs
rebuilding their sentences, the contract and save/load, and a real ``pyrovae fit`` on a tiny set."""

import textwrap

import pyro
import pytest
import torch

import pyrovae  # noqa: F401
from pyrovae import log_weights
from pyrovae.data.seq2seq import Seq2SeqDataSet, continuation_pairs
from pyrovae.guides import Seq2SeqGuide
from pyrovae.models import Seq2Seq, Seq2SeqVAE
from pyrovae.models.sentence import EOS_ID, PAD_ID, decoder_inputs
from pyrovae.models.seq2seq import _code
from tests.contract import check_contract

V = 15
SIZES = dict(vocab_size=V, embed_dim=6, hidden_dim=7, encoder_dim=4)


def pair(seed=0, **options):
    torch.manual_seed(seed)
    return Seq2SeqVAE(**SIZES, z_dim=3, **options), Seq2SeqGuide(**SIZES, z_dim=3)


def padded(batch, extra_target=3, extra_source=4):
    """The batch with more padding columns on both halves (ids <pad>, mask False)."""
    out = dict(batch)
    for key, mask_key, extra in (("x", "mask", extra_target), ("source", "source_mask", extra_source)):
        n = batch[key].shape[0]
        out[key] = torch.cat([batch[key], torch.full((n, extra), PAD_ID)], 1)
        out[mask_key] = torch.cat([batch[mask_key], torch.zeros(n, extra, dtype=torch.bool)], 1)
    return out


@pytest.mark.parametrize("prior", ["conditional", "standard"])
def test_padding_of_source_and_target_changes_nothing(prior):
    model, guide = pair(prior=prior)
    batch = model.example_batch(6)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        before = log_weights(model, guide, batch, 4)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        after = log_weights(model, guide, padded(batch), 4)
    assert torch.allclose(before, after, atol=1e-5)
    # garbage ids under the mask change nothing either
    junk = padded(batch)
    junk["x"] = torch.where(junk["mask"], junk["x"], torch.full_like(junk["x"], 7))
    junk["source"] = torch.where(junk["source_mask"], junk["source"], torch.full_like(junk["source"], 9))
    pyro.set_rng_seed(1)
    with torch.no_grad():
        assert torch.allclose(before, log_weights(model, guide, junk, 4), atol=1e-5)
    # and the source matters: another source changes the weights
    other = dict(batch, source=torch.where(batch["source_mask"], (batch["source"] + 1 - 4) % (V - 4) + 4, 0))
    pyro.set_rng_seed(1)
    with torch.no_grad():
        assert not torch.allclose(before, log_weights(model, guide, other, 4), atol=1e-3)


def test_semantic_vector_is_final_state_and_attention_sum_written_out():
    model, _ = pair()
    batch = model.example_batch(5)
    enc = model.encoder
    v = model.semantic_vector(batch["source"], batch["source_mask"])
    assert v.shape == (5, 16)
    for n in range(5):
        S = int(batch["source_mask"][n].sum())
        out, _ = enc.lstm(enc.embed(batch["source"][n:n + 1, :S]))  # unpadded, one row
        H = out.shape[-1] // 2
        final = torch.cat([out[0, -1, :H], out[0, 0, H:]])
        weights = torch.softmax(out[0] @ final, 0)
        assert torch.allclose(v[n], torch.cat([final, weights @ out[0]]), atol=1e-5)
    states, final = enc.states(batch["source"], batch["source_mask"])
    a = enc.attention(states, final, batch["source_mask"])
    assert torch.allclose(a.sum(1), torch.ones(5)) and (a[~batch["source_mask"]] == 0).all()


def test_the_baseline_is_the_vae_network_with_z_removed():
    model, _ = pair()
    torch.manual_seed(3)
    net = Seq2Seq(**SIZES)
    # copy the baseline into the VAE; the z columns of the decoder's W set to zero
    state = model.state_dict()
    for key, value in net.state_dict().items():
        if key == "decoder.init.weight":
            state[key] = torch.cat([value, torch.zeros(value.shape[0], 3)], 1)
        else:
            state[key] = value
    model.load_state_dict(state)
    model.eval(), net.eval()
    batch = model.example_batch(6)
    exact = net.log_prob(batch["x"], batch["mask"], batch["source"], batch["source_mask"])
    v = model.semantic_vector(batch["source"], batch["source_mask"])
    for z in (torch.zeros(6, 3), torch.randn(4, 6, 3) * 3):
        log_px = model.decoder.likelihood(decoder_inputs(batch["x"]), batch["mask"], _code(v, z)).log_prob(batch["x"])
        assert torch.allclose(log_px, exact.expand_as(log_px), rtol=1e-5, atol=1e-4)  # sums over tokens in float32
    # and a baseline trace's only site is the observed target, its log-prob the exact one
    trace = pyro.poutine.trace(net).get_trace(**batch)
    assert "z" not in trace.nodes and trace.observation_nodes == ["x"]
    assert torch.allclose(trace.nodes["x"]["fn"].log_prob(batch["x"]), exact, rtol=1e-5, atol=1e-4)


def test_continuation_pairs_rebuild_their_sentences():
    rows = [[5, 6, 7, 8, EOS_ID], [5, 6, EOS_ID], [9, EOS_ID], [4, 5, 6, 7, 8, 9, 10, EOS_ID]]
    from pyrovae.data.sequences import pad_sequences
    split = pad_sequences(rows)
    pairs = continuation_pairs(split, EOS_ID)
    assert pairs["lengths"].tolist() == [3, 2, 5] and pairs["source_lengths"].tolist() == [2, 1, 3]
    kept = [r for r in rows if len(r) >= 3]
    for n, row in enumerate(kept):
        s, t = int(pairs["source_lengths"][n]), int(pairs["lengths"][n])
        assert pairs["source"][n, :s].tolist() + pairs["x"][n, :t].tolist() == row
        assert (pairs["x"][n, t:] == PAD_ID).all() and (pairs["source"][n, s:] == PAD_ID).all()
        assert pairs["mask"][n].sum() == t and pairs["source_mask"][n].sum() == s
    with pytest.raises(ValueError, match="fraction"):
        continuation_pairs(split, EOS_ID, fraction=1.0)
    data = Seq2SeqDataSet("t", pairs, pairs, pairs, (), "none")
    batches = list(data.bucketed("train", 2, shuffle=False))
    assert sorted(int(b["lengths"].max()) for b in batches) == [3, 5]
    for b in batches:
        assert b["x"].shape[1] == int(b["lengths"].max()) and b["source"].shape[1] == int(b["source_lengths"].max())


def test_contract_generate_and_errors():
    for prior in ("conditional", "standard"):
        pyro.clear_param_store()
        model, guide = pair(prior=prior)
        check_contract(model, guide, model.example_batch(8))
        batch = model.example_batch(4)
        out = model.generate(batch["source"], batch["source_mask"], greedy=True, mean=True, max_length=8)
        assert out.shape[0] == 4 and out.shape[1] <= 8
        ended = (out == EOS_ID).cumsum(1) > 0
        after = torch.cat([torch.zeros(4, 1, dtype=torch.bool), ended[:, :-1]], 1)
        assert (out[after] == PAD_ID).all() and not (out[~after] == PAD_ID).any()
    with pytest.raises(ValueError, match="source"):
        model(batch["x"], batch["mask"])
    with pytest.raises(ValueError, match="prior"):
        Seq2SeqVAE(vocab_size=V, prior="flat")
    with pytest.raises(ValueError, match="encoder_dim"):
        Seq2SeqGuide(vocab_size=V, encoder_dim=0)
    with pytest.raises(ValueError, match="one source per target"):
        model(batch["x"], batch["mask"], source=batch["source"][:2], source_mask=batch["source_mask"][:2])


PAIRS_MODULE = textwrap.dedent('''
    """A tiny seq2seq set: 40 / 10 / 10 sentences over 12 words, cut in halves."""
    import torch

    from pyrovae.data.datasets import register_dataset
    from pyrovae.data.seq2seq import Seq2SeqDataSet, continuation_pairs
    from pyrovae.data.sequences import Vocab, pad_sequences

    WORDS = "the cat dog sat ran on mat far away and a".split()


    @register_dataset("tiny-pairs")
    def load_tiny_pairs(data_dir, binarize, valid_size):
        vocab = Vocab.build([WORDS], tokenizer="whitespace")
        g = torch.Generator().manual_seed(0)
        def split(n):
            rows = []
            for _ in range(n):
                length = int(torch.randint(2, 7, (1,), generator=g))
                rows.append(vocab.ids([WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=g)])
                            + [vocab.eos_id])
            return continuation_pairs(pad_sequences(rows), vocab.eos_id)
        return Seq2SeqDataSet("tiny-pairs", split(40), split(10), split(10), (len(vocab),), "none", vocab=vocab)
''')


def test_cli_fit_on_tiny_pairs(tmp_path):
    """``pyrovae fit`` of seq2seq-vae in a real process (vocabulary filled
    from the data; the batch's source keys reach the pair)."""
    import json

    from tests.cli.helpers import pyrovae as run_cli

    (tmp_path / "tinypairs.py").write_text(PAIRS_MODULE)
    env = {"PYTHONPATH": str(tmp_path)}
    done = run_cli("fit", "--import", "tinypairs", "--model", "seq2seq-vae", "--data", "tiny-pairs", "--epochs", "2",
                   "--batch-size", "10", "--z-dim", "4", "--embed-dim", "8", "--hidden-dim", "8", "--encoder-dim", "4",
                   "--eval-samples", "5", "--no-progress", "--out", "run", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["vocab_size"] == 15 and saved["guide"]["options"]["encoder_dim"] == 4
