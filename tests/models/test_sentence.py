"""The sentence VAEs (Bowman et al. 2016; Xu & Durrett 2018) and their LM baseline: log-weights
computed by hand from the decoder's softmaxes, padding never counted, word dropout replacing
the right fraction of the inputs and never the targets, the LM as the decoder with z removed,
the vMF posterior's constant KL, and a real ``pyrovae fit`` / ``evaluate`` on a tiny text set."""

import math
import textwrap

import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import pyrovae  # noqa: F401
from pyrovae import fit, log_weights
from pyrovae.distributions import HypersphericalUniform, VonMisesFisher
from pyrovae.guides import SentenceGuide, SentenceVMFGuide
from pyrovae.models import SentenceLM, SentenceVAE, SphericalSentenceVAE
from pyrovae.models.sentence import BOS_ID, EOS_ID, PAD_ID, UNK_ID, decoder_inputs, no_latents, word_dropout
from tests.contract import check_contract

V = 15
SIZES = dict(vocab_size=V, z_dim=3, embed_dim=6, hidden_dim=7)


def pair(spherical=False, seed=0, **model_options):
    torch.manual_seed(seed)
    if spherical:
        return SphericalSentenceVAE(**SIZES, **model_options), SentenceVMFGuide(**SIZES, fixed_kappa=5.0)
    return SentenceVAE(**SIZES, **model_options), SentenceGuide(**SIZES)


def weights_and_z(model, guide, batch, k=4, seed=0):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        log_w, guide_trace, _ = log_weights(model, guide, batch, k, return_traces=True)
    return log_w, guide_trace.nodes["z"]["value"]


def by_hand(model, guide, batch, z):
    """log p(z) + sum_{t < length} log softmax(V h_t + c)[w_t] - log q(z | x), written out."""
    x, lengths = batch["x"], batch["mask"].sum(1)
    K, N = z.shape[:2]
    dec = model.decoder
    total = torch.zeros(K, N)
    for n in range(N):
        T = int(lengths[n])
        words = x[n, :T]
        inputs = torch.cat([torch.tensor([BOS_ID]), words[:-1]])
        h, c = torch.tanh(dec.init(z[:, n])).split(dec.hidden_dim, -1)  # (K, H)
        out, _ = dec.lstm(dec.embed(inputs).expand(K, T, -1), (h[None].contiguous(), c[None].contiguous()))
        log_px = torch.log_softmax(dec.out(out), -1)[:, torch.arange(T), words].sum(-1)
        q = guide.encode(x[n:n + 1, :T])
        total[:, n] = model.prior(1).log_prob(z[:, n:n + 1]).squeeze(-1) + log_px - q.log_prob(z[:, n:n + 1]).squeeze(-1)
    return total


@pytest.mark.parametrize("spherical", [False, True])
def test_log_weights_are_the_decoder_softmaxes_written_out(spherical):
    model, guide = pair(spherical)
    batch = model.example_batch(n=5, num_steps=6, seed=3)
    assert batch["lengths"].tolist() != [6] * 5  # some rows are padded
    log_w, z = weights_and_z(model, guide, batch, k=3)
    with torch.no_grad():
        expected = by_hand(model, guide, batch, z)
    assert torch.allclose(log_w, expected, atol=1e-4), (log_w, expected)


@pytest.mark.parametrize("spherical", [False, True])
def test_padding_changes_nothing(spherical):
    model, guide = pair(spherical, seed=1)
    batch = model.example_batch(n=6, num_steps=5, seed=2)
    log_w, _ = weights_and_z(model, guide, batch, k=3, seed=5)
    # other ids in the padding, and three more padding columns: the same log-weights (same draws)
    x = torch.where(batch["mask"], batch["x"], torch.full_like(batch["x"], 7))
    wider = {"x": torch.cat([x, torch.full((6, 3), 9)], 1), "mask": torch.cat([batch["mask"], torch.zeros(6, 3, dtype=torch.bool)], 1),
             "lengths": batch["lengths"]}
    assert torch.allclose(weights_and_z(model, guide, wider, k=3, seed=5)[0], log_w, atol=1e-5)
    # ... and the training loss too
    objective = pyro.infer.Trace_ELBO()
    pyro.set_rng_seed(0)
    a = objective.differentiable_loss(model, guide, **batch)
    pyro.set_rng_seed(0)
    b = objective.differentiable_loss(model, guide, **wider)
    assert torch.allclose(a, b, atol=1e-4)
    # while a real word does count
    changed = dict(batch, x=batch["x"].clone())
    changed["x"][0, 0] = 4 if changed["x"][0, 0] != 4 else 5
    assert not torch.allclose(weights_and_z(model, guide, changed, k=3, seed=5)[0][:, 0], log_w[:, 0])


@pytest.mark.parametrize("lead", [(), (4,), (2, 3)])
@pytest.mark.parametrize("prefix", [True, False])
def test_real_words_is_the_masked_categorical_over_all_the_logits(lead, prefix):
    """The likelihood computes the softmax at the real steps only (the LSTM packed where the
    mask is a prefix, as the data sets give it): log p(x | z) and its gradients are those of
    Categorical(logits=decoder(inputs, z)).mask(mask).to_event(1) over every step."""
    model, _ = pair(seed=2)
    batch = model.example_batch(n=6, num_steps=7, seed=3)
    x, mask = batch["x"], batch["mask"]
    if not prefix:  # a hole in a sentence: the LSTM runs over every step
        mask = mask.clone()
        mask[0, 2] = False
    z = torch.randn(lead + (6, 3), generator=torch.Generator().manual_seed(1))
    dec, inputs = model.decoder, decoder_inputs(x)
    new = dec.likelihood(inputs, mask, z)
    old = pyro.distributions.Categorical(logits=dec(inputs, z)).mask(mask).to_event(1)
    assert new.batch_shape == old.batch_shape == lead + (6,) and new.event_shape == (7,)
    params = list(dec.parameters())
    a, b = new.log_prob(x), old.log_prob(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for g_new, g_old in zip(torch.autograd.grad(a.sum(), params, allow_unused=True),
                            torch.autograd.grad(b.sum(), params, allow_unused=True)):
        if g_old is None:
            assert g_new is None or not g_new.any()
        else:
            torch.testing.assert_close(g_new, g_old, atol=1e-5, rtol=1e-5)
    draw = new.sample()
    assert draw.shape == lead + (6, 7) and (draw[..., ~mask] == PAD_ID).all()


def test_the_encoder_reads_the_state_at_the_last_real_word():
    """SentenceEncoder (the LSTM run padded up to the longest sentence) gives the last state of
    the LSTM over the sentences packed by length, and the same gradients."""
    from pyrovae.guides.sentence import SentenceEncoder

    torch.manual_seed(0)
    encoder = SentenceEncoder(30, 5, 7)
    lengths = torch.tensor([6, 3, 5, 1, 2])
    x = torch.randint(4, 30, (5, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(9) < lengths[:, None]
    new = encoder(x, mask)
    packed = torch.nn.utils.rnn.pack_padded_sequence(encoder.embed(x), lengths, batch_first=True, enforce_sorted=False)
    old = encoder.lstm(packed)[1][0][-1]
    torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)
    params = list(encoder.parameters())
    for a, b in zip(torch.autograd.grad(new.sin().sum(), params), torch.autograd.grad(old.sin().sum(), params)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_word_dropout_replaces_the_right_fraction_and_never_bos_or_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, 50, (400, 30), generator=g)
    lengths = torch.randint(5, 31, (400,), generator=g)
    mask = torch.arange(30) < lengths[:, None]
    x = torch.where(mask, x, torch.zeros_like(x))
    inputs = decoder_inputs(x)
    for rate in (0.0, 0.25, 0.6, 1.0):
        dropped = word_dropout(inputs, rate, mask, generator=torch.Generator().manual_seed(1))
        real = mask & (inputs != BOS_ID)  # the droppable inputs: real words after <bos>
        changed = dropped != inputs
        assert (dropped[changed] == UNK_ID).all()
        assert not changed[~real].any()  # <bos> and padding stay
        assert (dropped[:, 0] == BOS_ID).all()
        n = int(real.sum())
        frac = float(changed[real].float().mean())
        assert abs(frac - rate) < 4 * math.sqrt(rate * (1 - rate) / n) + 1e-9, (rate, frac)
    assert torch.equal(inputs, decoder_inputs(x))  # not modified in place
    with pytest.raises(ValueError, match="word dropout rate"):
        word_dropout(inputs, 1.5)


def test_word_dropout_in_the_model_changes_inputs_never_targets():
    """With rate 1, in training mode, log p(x | z) is the decoder reading <bos> <unk> <unk> ...;
    the observed value is x; in eval mode there is no dropout."""
    model, guide = pair(word_dropout=1.0)
    batch = model.example_batch(n=4, num_steps=5, seed=1)
    pyro.set_rng_seed(0)
    guide_trace = pyro.poutine.trace(guide).get_trace(**batch)
    z = guide_trace.nodes["z"]["value"]
    replay = lambda: pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(**batch)  # noqa: E731
    model.train()
    site = replay().nodes["x"]
    assert torch.equal(site["value"], batch["x"])
    unk = torch.where(batch["mask"], torch.full_like(batch["x"], UNK_ID), torch.zeros_like(batch["x"]))
    unk[:, 0] = BOS_ID
    with torch.no_grad():
        expected = model.decoder.likelihood(unk, batch["mask"], z).log_prob(batch["x"])
        clean = model.decoder.likelihood(decoder_inputs(batch["x"]), batch["mask"], z).log_prob(batch["x"])
    assert torch.allclose(site["fn"].log_prob(batch["x"]), expected, atol=1e-5)
    model.eval()
    assert torch.allclose(replay().nodes["x"]["fn"].log_prob(batch["x"]), clean, atol=1e-5)
    assert not torch.allclose(expected, clean)


def test_the_lm_is_the_vae_decoder_with_z_removed():
    """The LM with the VAE decoder's weights (its initial-state bias the VAE's b) gives the VAE's
    log p(x | z) once the VAE's W is zero, for any z; the VAE's decoder otherwise depends on z."""
    model, _ = pair()
    lm = SentenceLM(vocab_size=V, embed_dim=6, hidden_dim=7)
    lm_params = {k for k, _ in lm.decoder.named_parameters()}
    vae_params = {k for k, _ in model.decoder.named_parameters()}
    assert lm_params - vae_params == {"init_bias"} and vae_params - lm_params == {"init.weight", "init.bias"}
    batch = model.example_batch(n=6, num_steps=5, seed=4)
    z = torch.randn(2, 6, 3)
    with torch.no_grad():
        with_z = model.decoder.likelihood(decoder_inputs(batch["x"]), batch["mask"], z).log_prob(batch["x"])
        assert not torch.allclose(with_z[0], with_z[1])
        state = {k: v for k, v in model.decoder.state_dict().items() if not k.startswith("init.")}
        lm.decoder.load_state_dict({**state, "init_bias": model.decoder.init.bias}, strict=True)
        model.decoder.init.weight.zero_()
        without = model.decoder.likelihood(decoder_inputs(batch["x"]), batch["mask"], z).log_prob(batch["x"])
    assert torch.allclose(lm.log_prob(batch["x"], batch["mask"]).expand(2, 6), without, atol=1e-5)
    # and the LM trains with fit and the empty guide: its loss is -log p(x) per sentence
    lm.train()
    result = fit(lm, no_latents, batch, epochs=3, batch_size=6, lr=1e-2, progress=False)
    losses = [m["train_loss"] for m in result.metrics]
    assert losses[-1] < losses[0]
    lm.eval()
    pyro.set_rng_seed(0)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(lm, no_latents, **batch)
    assert torch.allclose(loss, -lm.log_prob(batch["x"], batch["mask"]).sum(), atol=1e-4)


def test_vmf_guide_kl_is_the_constant_closed_form():
    model, guide = pair(spherical=True)
    batch = model.example_batch(n=5, num_steps=4)
    q = guide.encode(batch["x"], batch["mask"])
    assert isinstance(q, VonMisesFisher) and torch.allclose(q.loc.norm(dim=-1), torch.ones(5))
    kl = kl_divergence(q, model.prior(5))
    # KL(vMF(mu, kappa) || U(S^{d-1})) = E_q[log q] + log area, by Monte Carlo against the closed form
    z = q.sample((20000,))
    mc = (q.log_prob(z) - HypersphericalUniform(3, (5,)).log_prob(z)).mean(0)
    assert torch.allclose(kl, kl[0].expand(5), atol=1e-5)  # the same for every sentence
    assert torch.allclose(mc, kl, atol=0.03), (mc, kl)
    assert model.prior(2).sample().norm(dim=-1).allclose(torch.ones(2))
    learned = SentenceVMFGuide(**SIZES, fixed_kappa=None)
    assert learned.head.out_features == 4
    with pytest.raises(ValueError, match="fixed_kappa"):
        SentenceVMFGuide(**SIZES, fixed_kappa=0.0)


def test_contract_generate_homotopy_and_options():
    for spherical in (False, True):
        pyro.clear_param_store()  # the two pairs share parameter names
        model, guide = pair(spherical)
        check_contract(model, guide, model.example_batch(8))
        means = guide.posterior_mean(model.example_batch(2)["x"], model.example_batch(2)["mask"])
        path = model.interpolate(means[0], means[1], 5)
        assert path.shape == (5, 3) and torch.allclose(path[0], means[0], atol=1e-5)
        assert torch.allclose(path[-1], means[1], atol=1e-5)
        if spherical:
            assert torch.allclose(path.norm(dim=-1), torch.ones(5), atol=1e-5)
        out = model.generate(path, greedy=True, max_length=8)
        assert out.shape[0] == 5 and out.shape[1] <= 8
        ended = (out == EOS_ID).cumsum(1) > 0
        after = torch.cat([torch.zeros(5, 1, dtype=torch.bool), ended[:, :-1]], 1)
        assert (out[after] == PAD_ID).all() and not (out[~after] == PAD_ID).any()
    with pytest.raises(ValueError, match="word_dropout"):
        SentenceVAE(vocab_size=V, word_dropout=2.0)
    with pytest.raises(ValueError, match="vocab_size"):
        SentenceVAE(vocab_size=3)
    with pytest.raises(ValueError, match="z_dim >= 2"):
        SphericalSentenceVAE(vocab_size=V, z_dim=1)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        SentenceVAE(**SIZES)(torch.zeros(2, 3, 4, dtype=torch.long))


TEXT_MODULE = textwrap.dedent('''
    """A tiny text data set: 40 / 10 / 10 sentences over a 12-word vocabulary."""
    import torch

    from pyrovae.data.datasets import register_dataset
    from pyrovae.data.sequences import SequenceDataSet, Vocab, pad_sequences

    WORDS = "the cat dog sat ran on mat far away and a".split()


    @register_dataset("tiny-text")
    def load_tiny_text(data_dir, binarize, valid_size):
        vocab = Vocab.build([WORDS], tokenizer="whitespace")
        g = torch.Generator().manual_seed(0)
        def split(n):
            rows = []
            for _ in range(n):
                length = int(torch.randint(2, 7, (1,), generator=g))
                rows.append(vocab.ids([WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=g)])
                            + [vocab.eos_id])
            return pad_sequences(rows)
        return SequenceDataSet("tiny-text", split(40), split(10), split(10), (len(vocab),), "none", vocab=vocab)
''')


@pytest.mark.parametrize("model,guide", [("sentence-vae", "sentence"),
                                         pytest.param("sentence-svae", "sentence-vmf", marks=pytest.mark.slow)])
def test_cli_fit_then_evaluate_on_a_tiny_text_set(tmp_path, model, guide):
    """``pyrovae fit`` and ``pyrovae evaluate`` in real processes, the vocabulary size filled from the
    data (~10 s a process on an idle CPU; the spherical pair's run is marked slow)."""
    import json

    from tests.cli.helpers import pyrovae as run_cli

    (tmp_path / "tinytext.py").write_text(TEXT_MODULE)
    done = run_cli("fit", "--import", "tinytext", "--model", model, "--guide", guide, "--data", "tiny-text",
                   "--epochs", "2", "--batch-size", "10", "--z-dim", "4", "--embed-dim", "8", "--hidden-dim", "8",
                   "--word-dropout", "0.25", "--kl-warmup", "4", "--eval-samples", "5", "--no-progress", "--out", "run",
                   cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=5)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["vocab_size"] == 15 and saved["model"]["options"]["word_dropout"] == 0.25
    done = run_cli("evaluate", "run", "--num-samples", "7", cwd=tmp_path,  # K=5 was scored by fit already
                   env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "10 datapoints" in done.stdout


def test_bias_at_token_frequencies_is_the_log_unigram_distribution():
    from pyrovae.nn import bias_at_token_frequencies_

    layer = bias_at_token_frequencies_(torch.nn.Linear(3, 5), torch.tensor([4, 4, 4, 1, 2, 2]), smoothing=1.0)
    expected = torch.tensor([1.0, 2.0, 3.0, 1.0, 4.0]) / 11
    assert torch.allclose(torch.softmax(layer.bias, 0), expected, atol=1e-6)
    assert torch.allclose(layer.bias.exp().sum(), torch.tensor(1.0), atol=1e-6)
    with pytest.raises(ValueError, match="token ids must be in"):
        bias_at_token_frequencies_(torch.nn.Linear(3, 5), torch.tensor([5]))


def _unigram(x, mask, vocab_size):
    counts = torch.bincount(x[mask & (x != PAD_ID)], minlength=vocab_size).double() + 1.0
    return (counts / counts.sum()).float()


@pytest.mark.parametrize("name", ["sentence-vae", "sentence-svae", "seq2seq-vae", "ssvae-text", "lm"])
def test_sequence_models_start_their_output_at_the_training_token_frequencies(name):
    """init_from_data (fit's default init, ``burda``): with the output weights at zero, every
    next-word distribution is the unigram distribution of the real tokens (padding and junk ids
    under the mask not counted)."""
    from pyrovae.nn import default_init, initialize_
    from pyrovae.registry import MODELS

    model = SentenceLM(vocab_size=V, embed_dim=6, hidden_dim=7) if name == "lm" else MODELS.get(name)(
        **(dict(SIZES) if name != "ssvae-text" else dict(SIZES, num_classes=3)))
    batch = SentenceVAE(**SIZES).example_batch(n=12, num_steps=6, seed=2)  # x, mask: what init_from_data reads
    junk = batch["x"].clone()
    junk[~batch["mask"]] = 7  # ids under the mask: not data
    batch = dict(batch, x=junk)
    assert default_init(model) == "burda"
    initialize_(model, torch.nn.Linear(1, 1), batch, "burda")
    expected = _unigram(batch["x"], batch["mask"], V)
    model.decoder.out.weight.data.zero_()
    with torch.no_grad():
        code = None
        if name != "lm":
            code = torch.zeros(12, model.decoder.init.in_features)
        logits = model.decoder(decoder_inputs(batch["x"]), code)
    assert torch.allclose(torch.softmax(logits, -1), expected.expand_as(logits), atol=1e-6)


def test_embed_dropout_acts_in_training_only():
    """The decoder's embedding dropout changes log p(x | z) in training mode and leaves the
    model's likelihood (eval mode: what every evaluation scores) as without it."""
    model, guide = pair(embed_dropout=0.5)
    plain, _ = pair()
    plain.load_state_dict(model.state_dict())
    batch = model.example_batch(n=4, num_steps=5, seed=1)
    z = torch.randn(4, SIZES["z_dim"])
    inputs = decoder_inputs(batch["x"])
    model.eval(), plain.eval()
    with torch.no_grad():
        clean = plain.decoder.likelihood(inputs, batch["mask"], z).log_prob(batch["x"])
        assert torch.allclose(model.decoder.likelihood(inputs, batch["mask"], z).log_prob(batch["x"]), clean)
        model.train()
        torch.manual_seed(0)
        dropped = model.decoder.likelihood(inputs, batch["mask"], z).log_prob(batch["x"])
    assert not torch.allclose(dropped, clean)
    with pytest.raises(ValueError, match="embed_dropout"):
        SentenceVAE(**SIZES, embed_dropout=1.0)


def test_fit_with_the_default_init_on_a_length_bucketed_text_set():
    """fit's default init for a sentence model reads the first training rows of a source whose
    batches are cut to different lengths (a bucketed DataLoader): they are padded, not refused."""
    from pyrovae.data.sequences import SequenceDataSet, pad_sequences
    from pyrovae.data.sources import head

    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, V, (int(n),), generator=g).tolist() + [EOS_ID] for n in torch.randint(1, 9, (40,), generator=g)]
    split = pad_sequences(rows)
    data = SequenceDataSet("t", split, split, split, (), "none")
    loader = data.bucketed("train", 8, shuffle=False)
    widths = {batch["x"].shape[1] for batch in loader}
    assert len(widths) > 1  # the batches are cut to different lengths
    first = head(loader, 40)
    assert first["x"].shape == (40, max(widths)) and int(first["mask"].sum()) == int(split["mask"].sum())
    model, guide = pair()
    result = fit(model, guide, loader, epochs=1, progress=False)  # init: burda, the sentence models' default
    assert len(result.metrics) == 1
