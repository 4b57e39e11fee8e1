"""Associative Compression Networks (Graves et al. 2018): the batched neighbour search matches
brute force (chunked, rows excluded, unfilled rows skipped); the code table grows, is saved in
the state dict and loads at its saved size; in training the table takes the batch's codes and
each row's prior is conditioned on one of its K nearest other codes; out of training the prior
is the mixture over the K nearest; a run saves its table, reloads it and resumes, from the
``pyrovae`` command. (The model/guide contract is the registry-wide contract tests'.)"""

import pyro
import pytest
import torch

import pyrovae  # noqa: F401
from pyrovae import load_run
from pyrovae.errors import UsageError
from pyrovae.guides import AcnGuide
from pyrovae.models import AssociativeCompressionNetwork
from pyrovae.models.acn_table import CodeTable, knn
from pyrovae.registry import pair_guide
from tests.cli.helpers import pyrovae as run_cli


def brute_force(queries, codes, k, exclude=None, valid=None):
    d = ((queries[:, None, :] - codes[None, :, :]) ** 2).sum(-1)
    if valid is not None:
        d[:, ~valid] = float("inf")
    if exclude is not None:
        d[torch.arange(len(queries)), exclude] = float("inf")
    return d.sort(1)


@pytest.mark.parametrize("num_codes, chunk", [(300, 7), (300, 64), (300, 1000), (5000, 1500), (5000, 20000)])
def test_knn_matches_brute_force(num_codes, chunk):
    """Chunks smaller and larger than the table; 5000 codes take the two-stage selection (group
    minima, then the best groups' members)."""
    g = torch.Generator().manual_seed(0)
    codes, queries = torch.randn(num_codes, 5, generator=g), torch.randn(40, 5, generator=g)
    queries[:10] = codes[:10] + 1e-3 * torch.randn(10, 5, generator=g)  # near a stored code
    valid = torch.rand(num_codes, generator=g) > 0.2
    exclude = torch.randint(0, num_codes, (40,), generator=g)
    exclude[:10] = torch.arange(10)
    valid[:10] = True
    for kwargs in ({}, {"exclude": exclude}, {"valid": valid}, {"exclude": exclude, "valid": valid}):
        d, i = knn(queries, codes, 6, chunk=chunk, **kwargs)
        bd, bi = brute_force(queries, codes, 6, **kwargs)
        assert torch.equal(i, bi[:, :6]), kwargs
        torch.testing.assert_close(d, bd[:, :6], rtol=1e-4, atol=1e-4)
        if "exclude" in kwargs:
            assert not (i == exclude[:, None]).any()
        else:
            assert torch.equal(i[:10, 0], torch.arange(10))  # its own code is nearest
        if "valid" in kwargs:
            assert valid[i].all()
    with pytest.raises(ValueError, match="fill the table first"):
        knn(queries, codes[:3], 5)


def test_code_table_grows_saves_and_loads_at_its_size():
    table = CodeTable(3)
    table.update(torch.tensor([4, 1]), torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert table.size == 5 and table.filled.tolist() == [False, True, False, False, True]
    table.update(torch.arange(20, 30), torch.ones(10, 3))
    assert table.size == 30 and table.num_filled == 12
    d, rows = table.neighbours(torch.tensor([[4.0, 5, 6]]), 2)
    assert rows[0, 0] == 1 and d[0, 0] == 0 and table.filled[rows].all()
    fresh = CodeTable(3)
    fresh.load_state_dict(table.state_dict())
    assert torch.equal(fresh.codes, table.codes) and torch.equal(fresh.filled, table.filled)
    with pytest.raises(ValueError, match=">= 0"):
        table.update(torch.tensor([-1]), torch.ones(1, 3))


def pair(k=3, seed=0, **options):
    torch.manual_seed(seed)
    model = AssociativeCompressionNetwork(x_dim=6, z_dim=2, hidden_dims=(8,), num_neighbours=k, **options)
    return model, pair_guide(model, AcnGuide(x_dim=6, z_dim=2, hidden_dims=(8,)))


def test_training_refreshes_the_table_and_conditions_on_one_of_the_k_nearest_others():
    model, guide = pair(k=3)
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((40, 6), 0.4), generator=g)
    model.train()
    model.prior(x[:30], torch.arange(30))  # fills rows 0..29
    batch, index = x[30:], torch.arange(30, 40)
    pyro.set_rng_seed(0)
    prior = model.prior(batch, index)
    codes = guide.encode(batch).mean.detach()
    torch.testing.assert_close(model.table.codes[30:40], codes)  # the batch's codes, stored
    _, nearest = brute_force(codes, model.table.codes, 3, exclude=index)
    nearest = nearest[:, :3]
    candidates = model.conditional_prior(model.table.codes[nearest]).base_dist.loc  # (10, 3, Z)
    match = (candidates - prior.base_dist.loc[:, None]).abs().amax(-1) < 1e-6  # (10, 3)
    assert match.any(1).all()  # each row's prior is one of its K nearest others'
    assert not (nearest == index[:, None]).any()


def test_out_of_training_the_prior_is_the_mixture_over_the_k_nearest():
    model, guide = pair(k=4)
    x = torch.bernoulli(torch.full((30, 6), 0.4), generator=torch.Generator().manual_seed(2))
    model.train()
    model.prior(x, torch.arange(30))
    model.eval()
    queries = x[:5]
    prior = model.prior(queries)
    z = torch.randn(5, 2)
    codes = guide.encode(queries).mean.detach()
    _, nearest = brute_force(codes, model.table.codes, 4)
    comps = model.conditional_prior(model.table.codes[nearest[:, :4]])  # batch (5, 4)
    expected = torch.logsumexp(comps.log_prob(z[:, None, :]), 1) - torch.log(torch.tensor(4.0))
    torch.testing.assert_close(prior.log_prob(z), expected)
    before = model.table.codes.clone()
    model.prior(queries)
    assert torch.equal(model.table.codes, before)  # nothing written out of training


def test_clear_errors_and_the_standard_prior():
    model, guide = pair()
    model.train()
    with pytest.raises(UsageError, match="digits-indexed"):
        model.prior(torch.zeros(3, 6))
    unbound = AssociativeCompressionNetwork(x_dim=6, z_dim=2, hidden_dims=(8,))
    with pytest.raises(UsageError, match="pair_guide"):
        unbound.codes(torch.zeros(1, 6))
    with pytest.raises(UsageError, match="table is empty"):
        model.daydream(torch.zeros(1, 6), 2)
    with pytest.raises(ValueError, match="unknown prior"):
        AssociativeCompressionNetwork(x_dim=6, prior="vamp")
    vae, _ = pair(prior="standard")
    p = vae.prior(torch.zeros(3, 6))
    assert torch.equal(p.base_dist.loc, torch.zeros(3, 2)) and vae.table.size == 0


def test_pixelcnn_decoder_is_a_normalized_likelihood():
    model, _ = pair(decoder="pixelcnn", num_layers=2, pixel_channels=4, first_kernel_size=3, image_shape=(2, 3))
    every = torch.tensor([[(i >> j) & 1 for j in range(6)] for i in range(64)], dtype=torch.float)
    z = torch.randn(1, 2).expand(64, 2)
    with torch.no_grad():
        total = torch.logsumexp(model.likelihood(z, every).log_prob(every), 0)
    assert abs(float(total)) < 1e-4  # p(x | z) sums to one over all 2^6 images


def cli_fit(folder, epochs, *more):
    return run_cli("fit", "--model", "acn", "--guide", "acn", "--data", "digits-indexed", "--epochs", str(epochs),
                   "--z-dim", "2", "--hidden-dims", "16", "--num-neighbours", "3", "--eval-samples", "2",
                   "--no-progress", "--out", "run", *more, cwd=folder)


def test_cli_fit_saves_the_table_and_resumes(tmp_path):
    """``pyrovae fit --model acn --data digits-indexed``: the checkpoint holds the code table (every
    training row filled), ``load_run`` restores it, and ``--resume`` continues the run."""
    done = cli_fit(tmp_path, 1)
    assert done.returncode == 0, done.stderr
    assert "test log-likelihood (K=2)" in done.stdout
    run = load_run(tmp_path / "run")
    table = run.model.table
    assert table.num_filled == 1200 == table.size  # every training row of the digits
    codes = table.codes.clone()
    done = cli_fit(tmp_path, 2, "--resume")
    assert done.returncode == 0, done.stderr
    resumed = load_run(tmp_path / "run")
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]
    assert resumed.model.table.num_filled == 1200
    assert not torch.equal(resumed.model.table.codes, codes)  # refreshed by the second epoch
