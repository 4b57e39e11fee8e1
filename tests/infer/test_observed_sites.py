"""The observed site is found from the trace, whatever its name (issue 8, item 10): a pair
whose observation site is ``obs`` gets its observed_data group and every diagnose figure."""

import types

import pyro
import pytest
import pyro.distributions as dist
import torch

from pyrovae import to_inference_data
from pyrovae.evaluation.latent_space import simulate
from pyrovae.evaluation.report import diagnose
from pyrovae.training.run_folder import Run

X_DIM, Z_DIM = 64, 2


class ObsPair(torch.nn.Module):
    """A Bernoulli VAE written as plain Pyro, its likelihood site named ``obs``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.decoder = torch.nn.Linear(Z_DIM, X_DIM)
        self.encoder = torch.nn.Linear(X_DIM, 2 * Z_DIM)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).split(Z_DIM, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))


def _images(n=24):
    return torch.bernoulli(torch.rand(n, X_DIM, generator=torch.Generator().manual_seed(1)))


def test_observed_data_group_uses_the_sites_own_name():
    pair, x = ObsPair(), _images(6)
    idata = to_inference_data(pair.model, pair.guide, x, num_samples=4)
    assert list(idata.observed_data.data_vars) == ["obs"]
    assert (idata.observed_data["obs"].values == x.numpy()).all()
    assert dict(idata.posterior_predictive["obs"].sizes) == {"chain": 1, "draw": 4, "datapoint": 6, "obs_dim": X_DIM}
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 4, "datapoint": 6}


def test_simulate_replaces_the_tensor_the_site_observes():
    pair, x = ObsPair(), _images(5)
    simulated, _, u = simulate(pair.model, {"x": x})
    assert simulated["x"].shape == x.shape and not torch.equal(simulated["x"], x) and u.shape == (1, 5, Z_DIM)


def test_diagnose_draws_every_figure_and_names_the_site(tmp_path):
    pair, x = ObsPair(), _images()
    run = Run(path=tmp_path, model=pair.model, guide=pair.guide, config={"data": {"name": "toy"}})
    dataset = types.SimpleNamespace(test={"x": x, "y": torch.arange(len(x)) % 3}, image_shape=(8, 8))
    results = diagnose(run, dataset, num_samples=10, num_datapoints=16, idata_draws=4, gap_datapoints=0)
    for name in ("samples.png", "reconstructions.png", "traversals.png", "interpolations.png", "latent_map.png",
                 "khat.png"):
        assert (tmp_path / name).is_file(), (name, results["skipped"])
    assert results["figure_site"] == "obs" and not results["skipped"]
    assert "samples x ~ p(x) (site `obs`)" in (tmp_path / "report.md").read_text()


def test_diagnose_refuses_what_is_not_a_loaded_run_before_writing(tmp_path):
    pair, x = ObsPair(), _images()
    stand_in = types.SimpleNamespace(path=tmp_path, model=pair.model, guide=pair.guide, config={}, metrics=[])
    with pytest.raises(TypeError, match=r"diagnose takes a loaded run \(pyrovae.load_run\(path\)\), got SimpleNamespace"):
        diagnose(stand_in, types.SimpleNamespace(test={"x": x}, image_shape=(8, 8)), num_samples=2)
    assert list(tmp_path.iterdir()) == []


def test_a_plain_models_samples_do_not_read_the_data_values():
    from pyrovae.evaluation.sampling import prior_samples

    pair, one, other = ObsPair(), _images(7), 1 - _images(2)  # (torch.bernoulli draws from the global stream)
    pyro.set_rng_seed(3)
    a, title = prior_samples(pair.model, 5, like={"x": one})
    pyro.set_rng_seed(3)
    b, _ = prior_samples(pair.model, 5, like={"x": other})
    assert torch.equal(a, b) and a.shape == (5, X_DIM) and title == "mean of p(x | z), z ~ p(z)"
    pyro.set_rng_seed(3)
    seed = int(torch.randint(2 ** 31, ()))  # the draw prior_samples makes, then z ~ p(z) by hand
    pyro.set_rng_seed(seed)
    z = dist.Normal(torch.zeros(5, Z_DIM), 1.0).sample()
    assert torch.allclose(a, torch.sigmoid(pair.decoder(z)))


def test_a_plain_model_that_reads_its_observed_values_cannot_sample():
    from pyrovae.evaluation.sampling import CannotSampleError, prior_samples

    pair = ObsPair()

    def autoregressive(x):  # each pixel's logit reads the pixels before it: the mean needs sequential draws
        pyro.module("decoder", pair.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), 1.0).to_event(1))
            shifted = torch.nn.functional.pad(x[:, :-1], (1, 0))
            pyro.sample("obs", dist.Bernoulli(logits=pair.decoder(z) + 3 * shifted).to_event(1), obs=x)

    with pytest.raises(CannotSampleError, match="reads the observed values .* give it a sample\\(num_samples\\) method"):
        prior_samples(autoregressive, 4, like={"x": _images(4)})
