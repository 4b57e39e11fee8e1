"""The Variational Homoencoder (Hewitt et al. 2018): the KL of c carries the paper's weight
n / |X| in the training objective (and one out of it); q(c | D) reads a random subset of 1-5
elements in training and the whole set out of it; padding contributes nothing; it fits from
the ``pyrovae`` command. (The model/guide contract and the save/load round trip are the
registry-wide contract tests.)"""

import json

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyrovae  # noqa: F401
from pyrovae import log_weights
from pyrovae.data.sets import pad_sets
from pyrovae.guides import HomoencoderGuide
from pyrovae.guides.homoencoder import random_subset
from pyrovae.models import VariationalHomoencoder
from pyrovae.models.homoencoder import kl_scale
from tests.cli.helpers import pyrovae as run_cli

SIZES = dict(x_dim=3, c_dim=2, z_dim=2, hidden_dims=(8,))


def pair(class_size=None, seed=0):
    torch.manual_seed(seed)
    return (VariationalHomoencoder(**SIZES, likelihood="gaussian", class_size=class_size),
            HomoencoderGuide(**SIZES, feature_dim=6, class_size=class_size))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [2, 5, 3, 4]
    return pad_sets([torch.randn(n, 3, generator=g) for n in sizes], 6)


def manual_loss(model, guide, data, scale_c):
    """-ELBO with the c term weighted by ``scale_c`` (S,), from one guide trace replayed in the model."""
    guide_tr = poutine.trace(guide).get_trace(**data)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
    mask = data["mask"]
    c_model = model_tr.nodes["c"]["fn"].log_prob(model_tr.nodes["c"]["value"]).reshape(-1)
    c_guide = guide_tr.nodes["c"]["fn"].log_prob(guide_tr.nodes["c"]["value"]).reshape(-1)
    items = (model_tr.nodes["x"]["fn"].log_prob(data["x"]) + model_tr.nodes["z"]["fn"].log_prob(
        model_tr.nodes["z"]["value"]) - guide_tr.nodes["z"]["fn"].log_prob(guide_tr.nodes["z"]["value"]))
    return -float(((items * mask).sum() + (scale_c * (c_model - c_guide)).sum()).detach())


@pytest.mark.parametrize("class_size", [None, 5, 20])
def test_the_kl_of_c_is_weighted_n_over_class_size_in_the_objective(class_size):
    """Trace_ELBO's loss equals the homoencoder bound written out by hand, the KL of c (log p(c) -
    log q(c | D), each set's draw) weighted by s = n / |X| (n the set's real elements), at the same
    draws; and the c site carries that scale in model and guide."""
    model, guide = pair(class_size)
    data = batch()
    n = data["mask"].sum(1).float()
    expected = torch.ones(4) if class_size is None else n / class_size
    torch.testing.assert_close(kl_scale(data["mask"], class_size), expected)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().loss(model, guide, **data)
    pyro.set_rng_seed(3)
    assert loss == pytest.approx(manual_loss(model, guide, data, expected), rel=1e-5, abs=1e-4)
    if class_size is not None:  # and it is not the unweighted ELBO
        pyro.set_rng_seed(3)
        assert abs(loss - manual_loss(model, guide, data, torch.ones(4))) > 1e-3
    pyro.set_rng_seed(3)
    tr = poutine.trace(guide).get_trace(**data)
    torch.testing.assert_close(torch.as_tensor(tr.nodes["c"]["scale"]).reshape(-1), expected)
    tr = poutine.trace(poutine.replay(model, trace=tr)).get_trace(**data)
    torch.testing.assert_close(torch.as_tensor(tr.nodes["c"]["scale"]).reshape(-1), expected)


def test_a_batch_class_size_overrides_the_option_and_eval_is_unweighted():
    model, guide = pair(class_size=20)
    data = batch()
    data["class_size"] = torch.tensor([10, 10, 30, 8])
    n = data["mask"].sum(1).float()
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().loss(model, guide, **data)
    pyro.set_rng_seed(1)
    assert loss == pytest.approx(manual_loss(model, guide, data, n / data["class_size"]), rel=1e-5, abs=1e-4)
    model.eval(), guide.eval()  # log p(X): the model's own density, q(c | X) over the whole set
    tr = poutine.trace(guide).get_trace(**data)
    assert float(torch.as_tensor(tr.nodes["c"]["scale"]).max()) == 1.0
    with pytest.raises(ValueError, match="class_size"):
        kl_scale(data["mask"], 3)


def test_q_c_reads_a_random_subset_in_training_and_the_set_out_of_it():
    mask = pad_sets([torch.zeros(n, 1) for n in (1, 2, 5, 5, 6)], 7)["mask"]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        sub = random_subset(mask, 1, 3, generator=g)
        assert not (sub & ~mask).any()  # only real items
        k = sub.sum(1)
        assert (k >= 1).all() and (k <= torch.clamp(mask.sum(1), max=3)).all()
        seen.add(int(k[2]))
    assert seen == {1, 2, 3}
    model, guide = pair()
    data = batch()
    guide.eval()
    whole = guide.statistic_net(data["x"], data["mask"]).mean
    pyro.set_rng_seed(0)
    tr = poutine.trace(guide).get_trace(**data)
    torch.testing.assert_close(tr.nodes["c"]["fn"].base_dist.loc[:, 0], whole)
    guide.train()
    pyro.set_rng_seed(0)
    tr = poutine.trace(guide).get_trace(**data)
    assert (tr.nodes["c"]["fn"].base_dist.loc[:, 0] - whole).abs().max() > 1e-4  # a subset, not the set


def test_padding_contributes_nothing():
    model, guide = pair(class_size=9)
    data = batch()
    noisy = {k: v.clone() for k, v in data.items()}
    noisy["x"][~noisy["mask"]] = 100.0
    for m in (model, guide):
        m.eval()
    pyro.set_rng_seed(0)
    a = log_weights(model, guide, data, 3)
    pyro.set_rng_seed(0)
    b = log_weights(model, guide, noisy, 3)
    torch.testing.assert_close(a, b)


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="class_size must be a positive integer"):
        VariationalHomoencoder(x_dim=2, class_size=0)
    with pytest.raises(ValueError, match="1 <= min_subset <= max_subset"):
        HomoencoderGuide(x_dim=2, min_subset=3, max_subset=2)


def test_cli_fit_on_digit_sets(tmp_path):
    """``pyrovae fit --model homoencoder --data digits-sets --class-size 20`` in a real process:
    the option reaches model and guide, the held-out test sets are scored."""
    done = run_cli("fit", "--model", "homoencoder", "--guide", "homoencoder", "--data", "digits-sets", "--epochs",
                   "1", "--c-dim", "2", "--z-dim", "2", "--hidden-dims", "8", "--feature-dim", "8", "--class-size",
                   "20", "--max-subset", "2", "--eval-samples", "2", "--no-progress", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=2)" in done.stdout
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"]["options"]["class_size"] == 20 and saved["guide"]["options"]["max_subset"] == 2
