"""fit's training batches of padded sequences are cut to each batch's own longest row: the same
rows in the same order as the padded batches (a function of seed and epoch, so a resumed epoch
sees the same batches), and the log-weights of a cut batch are, row by row, those of each
sequence scored alone at its own length with the same latents (the sum of the per-sequence
ELBOs), for the DMM and the VRNN."""

import pyro
import pytest
import torch
from pyro.poutine.messenger import Messenger

import pyrovae  # noqa: F401
from pyrovae import fit, log_weights
from pyrovae.data.sequences import pad_sequences
from pyrovae.data.sources import TensorSource, padded_groups
from pyrovae.guides import VRNNGuide
from pyrovae.guides.dmm import DMMGuide
from pyrovae.models import VRNN
from pyrovae.models.dmm import DMM


def split(n=23, width=12, x_dim=6, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    lengths[0] = width  # the split's longest row, which most batches do not hold
    rows = [(torch.rand(int(length), x_dim, generator=g) < 0.3).float() for length in lengths]
    out = pad_sequences(rows)
    out["x"] = out["x"].float()
    if not labels:
        return out
    out["units"] = torch.where(out["mask"], 1, -1)  # a per-step label, cut with x
    out["y"] = torch.arange(n) % 3  # a per-row label, not cut
    return out


def batches(source, **kwargs):
    return [{k: v.clone() for k, v in b.items()} for b in source.epoch_batches(5, **kwargs)]


def test_cut_batches_are_the_padded_ones_cut_to_their_longest_row():
    data = split()
    source = TensorSource(data, "cpu")
    for kwargs in (dict(shuffle=True, seed=3, epoch=1), dict(shuffle=False)):
        padded, cut = batches(source, **kwargs), batches(source, cut=True, **kwargs)
        assert len(padded) == len(cut) == 5
        widths = []
        for p, c in zip(padded, cut):
            longest = int(p["lengths"].max())
            widths.append(longest)
            assert c["x"].shape == (len(p["x"]), longest, 6) and c["units"].shape[1] == longest
            for key in ("x", "mask", "units"):
                assert torch.equal(c[key], p[key][:, :longest])
                assert not p["mask"][:, longest:].any()
            assert torch.equal(c["y"], p["y"]) and torch.equal(c["lengths"], p["lengths"])
        assert min(widths) < 12  # something was cut
    # a resumed epoch (start=k) gives the same cut batches
    tail = batches(source, cut=True, shuffle=True, seed=3, epoch=1, start=2)
    whole = batches(source, cut=True, shuffle=True, seed=3, epoch=1)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(tail, whole[2:]) for k in a)


def test_groups_of_a_pair_and_of_data_without_masks():
    assert padded_groups({"x": torch.zeros(4, 3)}) == []
    data = {"x": torch.zeros(2, 5), "mask": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).bool(),
            "lengths": torch.tensor([2, 3]), "source": torch.zeros(2, 4),
            "source_mask": torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]]).bool(), "source_lengths": torch.tensor([1, 2])}
    groups = {tuple(keys): ends.tolist() for ends, keys in padded_groups(data)}
    assert groups == {("x", "mask"): [2, 3], ("source", "source_mask"): [1, 2]}
    batch = next(TensorSource(data, "cpu").epoch_batches(2, shuffle=False, cut=True))
    assert batch["x"].shape == (2, 3) and batch["source"].shape == (2, 2)


class Fixed(Messenger):
    """The guide's latents set to given values (still latent: unlike ``condition``, not observed)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values:
            msg["value"], msg["done"] = self.values[msg["name"]], True


def pairs():
    torch.manual_seed(0)
    yield "dmm", DMM(x_dim=6, z_dim=3, transition_dim=5, emission_dim=7), DMMGuide(x_dim=6, z_dim=3, rnn_dim=5)
    sizes = dict(x_dim=6, z_dim=3, rnn_dim=5, feature_dim=4, hidden_dims=(7,))
    yield "vrnn", VRNN(**sizes), VRNNGuide(**sizes)


@pytest.mark.parametrize("name,model,guide", list(pairs()), ids=["dmm", "vrnn"])
def test_a_cut_batch_scores_each_sequence_as_alone(name, model, guide):
    data = split(n=10, width=9, labels=False)
    source = TensorSource(data, "cpu")
    padded = next(source.epoch_batches(5, shuffle=True, seed=0, epoch=0))
    batch = next(source.epoch_batches(5, shuffle=True, seed=0, epoch=0, cut=True))
    assert batch["x"].shape[1] < padded["x"].shape[1]
    k = 3
    for scored in (batch, padded):
        pyro.set_rng_seed(1)
        with torch.no_grad():
            log_w, guide_trace, _ = log_weights(model, guide, scored, k, return_traces=True)
        assert log_w.shape == (k, 5)
        z = {n: s["value"] for n, s in guide_trace.nodes.items() if n.startswith("z") and s["type"] == "sample"}
        if "z" in z:  # one latent site (K, N, T, Z) for all steps (the DMM)
            assert z["z"].shape[-2] == scored["x"].shape[1]
        else:  # one per step (the VRNN)
            assert len(z) == scored["x"].shape[1]  # one latent per step of the batch's width
        alone_total = torch.zeros(k)
        for row in range(5):
            length = int(scored["lengths"][row])
            alone = {"x": scored["x"][row:row + 1, :length], "mask": scored["mask"][row:row + 1, :length],
                     "lengths": scored["lengths"][row:row + 1]}
            fixed = Fixed({"z": z["z"][:, row:row + 1, :length]} if "z" in z else
                          {f"z_{t}": z[f"z_{t}"][:, row:row + 1] for t in range(length)})(guide)
            with torch.no_grad():
                own = log_weights(model, fixed, alone, k)
            assert torch.allclose(log_w[:, row], own[:, 0], atol=1e-4), (name, row)
            alone_total += own[:, 0]
        # the batch's ELBO (per draw) is the sum of the sequences' own
        assert torch.allclose(log_w.sum(1), alone_total, atol=1e-3)


def test_fit_trains_on_cut_batches(monkeypatch):
    seen = []
    original = TensorSource.epoch_batches

    def spy(self, *args, **kwargs):
        for b in original(self, *args, **kwargs):
            seen.append(b["x"].shape[1])
            yield b
    monkeypatch.setattr(TensorSource, "epoch_batches", spy)
    model, guide = DMM(x_dim=6, z_dim=3, transition_dim=5, emission_dim=7), DMMGuide(x_dim=6, z_dim=3, rnn_dim=5)
    fit(model, guide, split(n=30, width=12, labels=False), epochs=1, batch_size=5, progress=False, valid_every=0)
    assert max(seen) == 12 and min(seen) < 12
