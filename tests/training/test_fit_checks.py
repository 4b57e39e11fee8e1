"""fit() refuses what it cannot honour: mismatched pairs, data outside the likelihood's
support, resumes that change shapes or data; records segments; options, log lines, figures."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import fit
from pyrovae.errors import UsageError
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.training import FitOptions

X = torch.bernoulli(torch.full((60, 6), 0.3), generator=torch.Generator().manual_seed(0))


def quick(model, guide, data=X, **kwargs):
    kwargs = {"epochs": 1, "batch_size": 20, "progress": False, "figures": False, **kwargs}
    return fit(model, guide, data, **kwargs)


def test_a_guide_with_other_site_names_is_refused_before_anything_is_written(tmp_path):
    encoder = torch.nn.Linear(6, 2)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(encoder(x), 1.0).to_event(1))

    with pytest.raises(UsageError, match=r"latent sites are 'z', the guide samples 'w' \(missing 'z', extra 'w'\)"):
        quick(VAE(6, 2, (8,)), guide, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_grey_levels_into_a_bernoulli_likelihood_are_refused(tmp_path):
    grey = torch.rand(60, 6, generator=torch.Generator().manual_seed(1))
    with pytest.raises(UsageError, match=r"observed site 'x' lie outside the support of its Bernoulli .*binarize"):
        quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), grey, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    quick(VAE(6, 2, (8,), likelihood="continuous_bernoulli"), DiagNormalGuide(6, 2, (8,)), grey)  # fits


def test_grey_levels_into_a_plain_pairs_bernoulli_are_refused(tmp_path):
    """The training steps compute a Bernoulli's density without torch's argument checks (the
    lean path); a plain-function pair's bad data still get the first step's clear error."""
    from pyrovae.bench.runners import user_pair

    torch.manual_seed(0)
    model, guide = user_pair(torch.nn.Linear(2, 6), torch.nn.Linear(6, 4), 2)
    grey = torch.rand(60, 6, generator=torch.Generator().manual_seed(1))
    with pytest.raises(UsageError, match=r"observed site 'x' lie outside the support of its Bernoulli"):
        quick(model, guide, grey, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    quick(model, guide, torch.bernoulli(grey))  # binary data train


@pytest.mark.parametrize("change, match", [
    (dict(z_dim=3), "with z_dim=3: it was fit with z_dim=2"),
    (dict(data=torch.bernoulli(torch.full((60, 5), 0.3))), "with x_dim=5: it was fit with x_dim=6"),
])
def test_resume_refuses_what_changes_shapes_or_data(tmp_path, change, match):
    quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), out_dir=tmp_path / "r")
    z_dim, data = change.get("z_dim", 2), change.get("data", X)
    x_dim = data.shape[1]
    with pytest.raises(UsageError, match=f"cannot resume {tmp_path / 'r'} {match}; start a new run"):
        quick(VAE(x_dim, z_dim, (8,)), DiagNormalGuide(x_dim, z_dim, (8,)), data, epochs=2, out_dir=tmp_path / "r",
              resume=True)


def test_resume_records_each_segment_with_what_it_ran(tmp_path):
    quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), out_dir=tmp_path / "r", lr=1e-3)
    quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), out_dir=tmp_path / "r", resume=True, epochs=3, lr=3e-3,
          objective="iwae", config={"threads": 1})
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    first, second = run["segments"]
    assert (first["epochs"], first["completed_epoch"], first["lr"], first["objective"]["name"]) == ([0, 1], 1, 1e-3,
                                                                                                    "meanfield")
    assert (second["epochs"], second["completed_epoch"], second["lr"], second["objective"]["name"]) == (
        [1, 3], 3, 3e-3, "iwae")
    assert second["threads"] == 1 and second["seed"] == 0 and second["device"] == "cpu"
    assert run["fit"]["lr"] == 3e-3 and run["objective"]["name"] == "iwae" and run["model"]["name"] == "vae"


def test_plain_pair_with_another_shape_is_refused_on_resume(tmp_path):
    def pair(z_dim):
        decoder = torch.nn.Linear(z_dim, 6)

        def model(x):
            pyro.module("decoder", decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

        def guide(x):
            loc = pyro.param("loc", torch.zeros(z_dim))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        return model, guide

    quick(*pair(2), out_dir=tmp_path / "p")
    pyro.clear_param_store()
    with pytest.raises(UsageError, match=r"shape \(3, 6\)|shape \(3,\)"):
        quick(*pair(3), out_dir=tmp_path / "p", resume=True, epochs=2)


def test_options_by_name_or_object_and_unknown_names():
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    quick(model, guide, options=FitOptions(device="cpu", progress=False), log_every=0)
    with pytest.raises(TypeError, match="unexpected keyword argument.*devise.*its options are"):
        quick(model, guide, devise="cpu")


def test_one_line_every_log_every_epochs_and_none_by_default(capsys):
    quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), epochs=4, log_every=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 2/4", "epoch 4/4"]
    quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), epochs=2)
    assert capsys.readouterr().err == ""


def test_valid_every_validates_every_n_epochs_and_after_the_last():
    valid = X[:20]
    result = quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), epochs=5, valid_data=valid, valid_every=2)
    assert [("valid_elbo" in m, "active_units" in m) for m in result.metrics] == \
        [(False, False), (True, True), (False, False), (True, True), (True, True)]
    result = quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), epochs=2, valid_data=valid, valid_every=0)
    assert not any("valid_elbo" in m for m in result.metrics)
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="valid_every must be a non-negative integer"):
            quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), valid_every=bad)


def test_a_fit_from_python_writes_the_cli_figures(tmp_path):
    model, guide = VAE(64, 2, (16,)), DiagNormalGuide(64, 2, (16,))
    result = fit(model, guide, "digits", epochs=1, batch_size=200, out_dir=tmp_path / "f", progress=False)
    names = sorted(p.name for p in result.figures)
    assert names == ["reconstructions.png", "samples.png", "training_curves.png"]
    assert all((tmp_path / "f" / n).stat().st_size > 1000 for n in names)



def test_a_resume_with_another_lr_trains_at_that_lr(tmp_path):
    """The optimizer's saved state carries its lr; the resumed segment must train at the lr it
    is given (and that run.json records), not silently at the saved one."""
    def resumed(folder, lr):
        pyro.set_rng_seed(0)  # the first segment's initial weights
        quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), out_dir=folder, lr=1e-3, seed=3)
        result = quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), out_dir=folder, resume=True, epochs=2, lr=lr, seed=3)
        return torch.cat([p.detach().flatten() for p in result.model.parameters()])

    same, faster = resumed(tmp_path / "a", 1e-3), resumed(tmp_path / "b", 3e-2)
    again = resumed(tmp_path / "c", 1e-3)
    assert torch.equal(same, again)  # the comparison is deterministic
    assert not torch.allclose(same, faster, atol=1e-4)  # the new lr took effect


def test_without_an_objective_fit_takes_the_guides_own(tmp_path):
    """fit(model, guide, data) trains M2 with its guide's ``enum`` (as ``pyrovae fit`` does), not
    ``elbo``; a guide that names none gets the model's declared ``meanfield`` where the guide's KL
    has a closed form (the VAE with the diagonal Normal guide, measured: docs/vae.md), else ``elbo``."""
    from pyrovae.guides.base import objective_for
    from pyrovae.guides.fullcov import FullCovNormalGuide
    from pyrovae.guides.m2 import M2Guide
    from pyrovae.models.m2 import M2

    torch.manual_seed(0)
    sizes = dict(x_dim=12, z_dim=3, hidden_dims=(16,))
    model = M2(**sizes)
    batch = model.example_batch()
    quick(model, M2Guide(**sizes), batch, out_dir=tmp_path / "m2", batch_size=len(batch["x"]))
    quick(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), out_dir=tmp_path / "vae")
    quick(VAE(6, 2, (8,)), FullCovNormalGuide(6, 2, (8,)), out_dir=tmp_path / "fullcov")
    runs = ("m2", "vae", "fullcov")
    names = [json.loads((tmp_path / run / "run.json").read_text())["objective"]["name"] for run in runs]
    assert names == ["enum", "meanfield", "elbo"]
    assert VAE.default_objective == "meanfield" and DiagNormalGuide.closed_form_kl
    assert objective_for(VAE, FullCovNormalGuide) == "elbo"  # no closed-form KL: the sampled one
    from pyrovae.models.hyperspherical import HypersphericalVAE
    from pyrovae.models.variance import VarianceVAE
    assert objective_for(HypersphericalVAE, DiagNormalGuide) == objective_for(VarianceVAE, DiagNormalGuide) == "elbo"


def test_a_kl_warmup_longer_than_the_run_is_said_in_one_warning():
    """vrnn's default warm-up (1000 steps) and a short --epochs: the run would end on a KL weight
    of a few hundredths, short of the bound, with nothing said."""
    import warnings

    from pyrovae.infer.objectives import ELBO

    x = torch.bernoulli(torch.full((30, 6), 0.3), generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match=r"KL warm-up \(100 steps\) is longer than this run \(6 steps\): the KL "
                                            r"weight ends at 0.06, short of the bound; .*--kl-warmup N.*e.g. 3"):
        fit(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), x, objective=ELBO(warmup_steps=100), epochs=2,
            batch_size=10, progress=False, figures=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), x, objective=ELBO(warmup_steps=6), epochs=2, batch_size=10,
            progress=False, figures=False)
