"""The semi-supervised text VAE (Xu et al. 2017's SSVAE, models/ssvae_text.py): the enumerated sum
over the 14 labels is the explicit sum of per-label bounds, labelled texts give their own label's
term only, padding changes nothing, the semi-supervised text data set, accuracy and macro-F1,
and a real ``pyrovae fit`` on a tiny labelled text set."""

import json
import math
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyrovae.data.datasets import list_datasets
from pyrovae.data.semisupervised import UNKNOWN
from pyrovae.data.sequences import SequenceDataSet, Vocab, pad_sequences
from pyrovae.guides.ssvae_text import SSVAETextGuide, accuracy_and_macro_f1
from pyrovae.infer.enum import EnumELBO
from pyrovae.models.ssvae_text import SSVAEText, semi_supervised_text
from tests.cli.helpers import pyrovae
from tests.contract import check_contract

C, V, Z = 14, 12, 2


def pair(seed=0):
    torch.manual_seed(seed)
    sizes = dict(vocab_size=V, num_classes=C, z_dim=Z, embed_dim=4, hidden_dim=5)
    return SSVAEText(**sizes), SSVAETextGuide(**sizes)


def per_label_elbo(model, guide, batch, eps):
    """L(x, y) for each of the C labels, ``(C, N)``, with z = loc + scale * eps[y] (enumeration's draws)."""
    x, mask = batch["x"], batch["mask"]
    h = guide.encoder(x, mask)
    rows = []
    for y in range(C):
        label = torch.full((len(x),), y)
        q = guide.encode(h, label)
        z = q.base_dist.loc + q.base_dist.scale * eps[y]
        log_p = (math.log(1 / C) + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 + model.likelihood(x, mask, z, label).log_prob(x))
        rows.append(log_p - q.log_prob(z))
    return torch.stack(rows)


def test_enumerated_sum_over_the_14_labels_is_the_explicit_sum():
    model, guide = pair()
    batch = model.example_batch(5)
    batch = {k: v for k, v in batch.items() if k not in ("y", "labelled")}  # all unlabelled
    pyro.set_rng_seed(3)
    loss = EnumELBO(alpha=0.0)(model, guide, batch)
    pyro.set_rng_seed(3)
    eps = torch.randn(C, 5, Z)  # the one draw of z per enumerated label, same stream
    L = per_label_elbo(model, guide, batch, eps)
    log_q = guide.classify(batch["x"], batch["mask"]).log_softmax(-1).T  # (C, N)
    explicit = (log_q.exp() * (L - log_q)).sum(0)  # U(x) = sum_y q(y|x) L(x, y) + H(q)
    assert torch.allclose(loss, -explicit.mean(), atol=1e-4), (loss, -explicit.mean())


def test_labelled_texts_use_their_label_only():
    model, guide = pair()
    batch = model.example_batch(6)  # rows 0, 2, 4 labelled
    labelled, y = batch["labelled"], batch["y"]
    pyro.set_rng_seed(5)
    loss = EnumELBO(alpha=0.0)(model, guide, batch)
    pyro.set_rng_seed(5)
    eps = torch.randn(C, 6, Z)
    L = per_label_elbo(model, guide, batch, eps)
    log_q = guide.classify(batch["x"], batch["mask"]).log_softmax(-1).T
    expected = torch.where(labelled, L[y.clamp(min=0), torch.arange(6)], (log_q.exp() * (L - log_q)).sum(0))
    assert torch.allclose(loss, -expected.mean(), atol=1e-4), (loss, -expected.mean())
    # changing a labelled row's label changes its term to that label's
    other = dict(batch, y=torch.where(labelled, (y + 1) % C, y))
    pyro.set_rng_seed(5)
    moved = EnumELBO(alpha=0.0)(model, guide, other)
    expected2 = torch.where(labelled, L[(y + 1).clamp(min=0) % C, torch.arange(6)], expected)
    assert torch.allclose(moved, -expected2.mean(), atol=1e-4)
    # at alpha = 0 no gradient reaches the classifier layer from labelled rows; alpha adds log q(y | x)
    only = {k: v[labelled] for k, v in batch.items()}
    EnumELBO(alpha=0.0)(model, guide, only).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in guide.classifier.parameters())
    losses = {}
    for alpha in (0.0, 2.0):
        pyro.set_rng_seed(9)
        losses[alpha] = EnumELBO(alpha=alpha)(model, guide, batch)
    log_q_y = F.log_softmax(guide.classify(batch["x"]), -1)[torch.arange(6), y.clamp(min=0)]
    assert torch.allclose(losses[2.0] - losses[0.0], -2.0 * (log_q_y * labelled).sum() / 6, atol=1e-5)


def test_padding_changes_nothing():
    model, guide = pair()
    batch = model.example_batch(6)
    n, t = batch["x"].shape
    junk = torch.randint(4, V, (n, 5), generator=torch.Generator().manual_seed(1))
    padded = dict(batch, x=torch.cat([batch["x"], junk], 1), mask=torch.cat([batch["mask"], torch.zeros(n, 5, dtype=torch.bool)], 1))
    losses = []
    for b in (batch, padded):
        pyro.set_rng_seed(2)
        losses.append(EnumELBO(alpha=1.0)(model, guide, b))
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    # without a mask the classifier reads the padding from the <pad> ids: the same logits
    assert torch.allclose(guide.classify(batch["x"]), guide.classify(batch["x"], batch["mask"]), atol=1e-6)


def test_contract_generation_and_options():
    model, guide = pair()
    check_contract(model, guide, model.example_batch(8), EnumELBO())
    assert guide.classifier_lstm() is not guide.encoder  # the classifier has its own LSTM by default
    pyro.clear_param_store()  # the two guides share parameter names
    shared = SSVAETextGuide(vocab_size=V, num_classes=C, z_dim=Z, embed_dim=4, hidden_dim=5, share_encoder=True)
    assert shared.classifier_lstm() is shared.encoder
    check_contract(model, shared, model.example_batch(8), EnumELBO())
    out = model.generate(torch.arange(3), max_length=7, greedy=True)
    assert out.shape[0] == 3 and out.shape[1] <= 7
    with pytest.raises(ValueError, match="vocab_size"):
        SSVAEText(vocab_size=3)
    with pytest.raises(ValueError, match="word_dropout"):
        SSVAEText(vocab_size=V, word_dropout=1.5)


def test_accuracy_and_macro_f1_by_hand():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0])
    accuracy, f1 = accuracy_and_macro_f1(predicted, y, 4)  # class 3: never predicted nor true, left out
    # F1: class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 1 fp 0 fn 1 -> 2/3
    assert accuracy == pytest.approx(4 / 6) and f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def tiny_text_set(n=60, num_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = "a b c d e f g h".split()
    vocab = Vocab.build([words], tokenizer="whitespace")

    def split(m):
        rows, labels = [], []
        for _ in range(m):
            length = int(torch.randint(2, 7, (1,), generator=g))
            rows.append(vocab.ids([words[int(i)] for i in torch.randint(0, 8, (length,), generator=g)]) + [vocab.eos_id])
            labels.append(int(torch.randint(num_classes, (1,), generator=g)))
        out = pad_sequences(rows)
        out["y"] = torch.tensor(labels)
        return out

    pool = pad_sequences([vocab.ids(["a", "b", "c", "d", "e", "f", "g", "h", "a"]) + [vocab.eos_id]] * 4)
    return SequenceDataSet("tiny", split(n), split(10), split(10), (len(vocab),), "none", num_classes=num_classes,
                           vocab=vocab, unlabelled=pool)


def test_semi_supervised_text_hides_all_but_the_chosen_labels():
    base = tiny_text_set()
    ds = semi_supervised_text(base, 2, seed=1, unlabelled=20, extra_pool=3, repeats=2)
    train, rows = ds.train, torch.tensor(ds.names["labelled_rows"])
    assert len(rows) == 6 and torch.bincount(base.train["y"][rows], minlength=3).tolist() == [2, 2, 2]
    assert ds.names["num_unlabelled"] == 23 and len(train["x"]) == 23 + 2 * 6
    assert (train["y"][~train["labelled"]] == UNKNOWN).all() and train["labelled"].sum() == 12
    assert torch.equal(train["y"][train["labelled"]], base.train["y"][rows].repeat(2))
    assert torch.equal(train["x"][23:29], base.train["x"][rows])  # the labelled texts themselves
    # the extra pool (wider than train) is cut to train's width, mask and lengths with it
    width = base.train["x"].shape[1]
    assert train["x"].shape[1] == width and (train["lengths"] <= width).all()
    assert torch.equal(train["mask"], torch.arange(width) < train["lengths"][:, None])
    assert not ds.test["labelled"].any() and torch.equal(ds.test["y"], base.test["y"])
    again = semi_supervised_text(base, 2, seed=1, unlabelled=20)
    assert again.names["labelled_rows"] == ds.names["labelled_rows"]
    assert semi_supervised_text(base, 2, seed=2).names["labelled_rows"] != ds.names["labelled_rows"]
    assert list(ds.bucketed("train", 8))  # batches by length work on it
    with pytest.raises(ValueError, match="unlabelled must be in"):
        semi_supervised_text(base, 2, unlabelled=1000)
    assert {"debian-140labels", "debian-1400labels-seed2"} <= set(list_datasets())


TEXT_MODULE = textwrap.dedent('''
    """A tiny labelled text set for the CLI test: 3 classes, 4 labels per class kept."""
    import sys
    from pyrovae.data.datasets import register_dataset
    from pyrovae.models.ssvae_text import semi_supervised_text

    sys.path.insert(0, {tests!r})
    from tests.models.test_ssvae_text import tiny_text_set


    @register_dataset("tiny-labelled-text")
    def load(data_dir, binarize, valid_size):
        return semi_supervised_text(tiny_text_set(), 4, seed=0)
''')


def test_cli_fit_on_a_tiny_labelled_text_set(tmp_path):
    """``pyrovae fit --model ssvae-text`` in a real process: the enum objective, the vocabulary and
    the classes filled from the data, the test accuracy and macro-F1 printed."""
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    (tmp_path / "tinylabelled.py").write_text(TEXT_MODULE.format(tests=root))
    done = pyrovae("fit", "--import", "tinylabelled", "--model", "ssvae-text", "--guide", "ssvae-text",
                   "--data", "tiny-labelled-text", "--epochs", "2", "--batch-size", "16", "--z-dim", "2",
                   "--embed-dim", "4", "--hidden-dim", "6", "--alpha", "5", "--eval-samples", "0", "--no-progress",
                   "--out", "run", cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{root}"})
    assert done.returncode == 0, done.stderr
    assert "test accuracy:" in done.stdout and "macro-F1" in done.stdout and "(10 texts)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["vocab_size"] == 12 and saved["model"]["options"]["num_classes"] == 3
    assert saved["objective"]["name"] == "enum" and saved["objective"]["alpha"] == 5.0
