"""``run.sample(n)`` and ``run.posterior(x)``: draws of a fitted pair by pyro.infer.Predictive,
checked against the model's and the guide's own distributions, for a registered pair and a
plain-function pair; a model whose distributions read its input is refused, not sampled."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive

from pyrovae import fit, load_run
from pyrovae.errors import UsageError
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE

X = torch.bernoulli(torch.full((60, 6), 0.3), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def vae_run(tmp_path):
    fit(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), X, epochs=2, batch_size=20, progress=False, figures=False,
        out_dir=tmp_path / "run")
    return load_run(tmp_path / "run")


def test_sample_draws_z_from_the_prior_and_x_from_the_likelihood_given_z(vae_run):
    n = 4000
    draws = vae_run.sample(n)
    assert set(draws) == {"z", "x"} and draws["z"].shape == (n, 2) and draws["x"].shape == (n, 6)
    z, x = draws["z"], draws["x"]
    # z ~ N(0, I): mean 0 and variance 1 within 5 standard errors
    assert z.mean(0).abs().max() < 5 / n ** 0.5 and (z.var(0) - 1).abs().max() < 5 * (2 / n) ** 0.5
    # x | z ~ Bernoulli(p(z)): the drawn pixels match the probabilities at the drawn z
    with torch.no_grad():
        p = vae_run.model.likelihood(z).base_dist.probs
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    error = (x - p).sum(0) / (p * (1 - p)).sum(0).sqrt()  # standardized, one per pixel
    assert error.abs().max() < 5, error


def test_sample_is_reproducible_under_pyros_seed(vae_run):
    pyro.set_rng_seed(3)
    a = vae_run.sample(10)
    pyro.set_rng_seed(3)
    b = vae_run.sample(10)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["z"], b["z"])


def test_posterior_draws_z_from_the_guide_given_x(vae_run):
    s = 3000
    draws = vae_run.posterior(X[:3], num_samples=s)
    assert draws["z"].shape == (s, 3, 2) and draws["x"].shape == (s, 3, 6)
    with torch.no_grad():
        q = vae_run.guide.encode(X[:3]).base_dist
    assert ((draws["z"].mean(0) - q.loc) / q.scale).abs().max() < 5 / s ** 0.5
    assert ((draws["z"].std(0) / q.scale) - 1).abs().max() < 5 * (1 / (2 * s)) ** 0.5
    assert not torch.equal(draws["x"][0], X[:3])  # drawn afresh, not the data given back
    same = vae_run.posterior({"x": X[:3]}, num_samples=2)  # a dict of named tensors works too
    assert same["z"].shape == (2, 3, 2)


def test_predictive_on_a_run_as_a_pyro_user_writes_it(vae_run):
    """What docs/runs.md shows: run.sample for the prior, Predictive with the guide for the rest."""
    draws = Predictive(vae_run.model, guide=vae_run.guide, num_samples=2)(x=X[:5])
    assert draws["z"].shape == (2, 5, 2)


def plain_pair():
    decoder, encoder = torch.nn.Linear(2, 6), torch.nn.Linear(6, 4)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = encoder(x).split(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))

    return model, guide, decoder, encoder


def test_a_plain_function_pair_samples_and_encodes(tmp_path):
    model, guide, _, _ = plain_pair()
    fit(model, guide, X, epochs=2, batch_size=20, progress=False, figures=False, out_dir=tmp_path / "run")
    pyro.clear_param_store()
    model, guide, decoder, encoder = plain_pair()  # fresh functions, as in another process
    run = load_run(tmp_path / "run", model=model, guide=guide)
    draws = run.sample(2000)
    with torch.no_grad():
        p = torch.sigmoid(decoder(draws["z"]))
    error = (draws["x"] - p).sum(0) / (p * (1 - p)).sum(0).sqrt()
    assert error.abs().max() < 5, error
    post = run.posterior(X[:2], num_samples=2000)
    with torch.no_grad():
        loc = encoder(X[:2]).split(2, -1)[0]
    assert (post["z"].mean(0) - loc).abs().max() < 0.15
    assert "user's model + user's guide" in repr(run)


def test_a_model_whose_distributions_read_its_input_is_refused(tmp_path):
    """A decoder that reads x (as an autoregressive one does) gives x | placeholder, not x ~ p(x)."""
    decoder, encoder = torch.nn.Linear(8, 6), torch.nn.Linear(6, 4)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(torch.cat([z, x], -1))).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = encoder(x).split(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))

    fit(model, guide, X, epochs=1, batch_size=20, progress=False, figures=False, out_dir=tmp_path / "run")
    run = load_run(tmp_path / "run", model=model, guide=guide)
    with pytest.raises(UsageError, match=r"distributions of 'x' depend on the values of its input 'x'.*pass the "
                                         r"inputs"):
        run.sample(4)
    given = run.sample(4, x=X[:4])  # conditioned on inputs the user chose: allowed
    assert given["x"].shape == (4, 6)
    with pytest.raises(UsageError, match="must be a tensor of 4 rows"):
        run.sample(4, x=X[:3])


def test_a_checkpoint_without_an_example_row_uses_the_models_own(vae_run):
    vae_run.example = None  # an older checkpoint: the suite's model knows its inputs' shapes
    assert vae_run.sample(5)["x"].shape == (5, 6)
