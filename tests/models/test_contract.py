"""Every registered model, paired with its guide, meets the model/guide contract, and draws
fresh data; and any pair that follows the contract's three rules passes the same check,
whatever its signature: plain functions, a conditional pair ``(x, y)``, a batch key other
than ``x``, a data plate declared or around a nested plate."""

import inspect

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrovae.models.base import Model, guide_name_of
from pyrovae.registry import get_model, list_models
from pyrovae.evaluation.sampling import CannotSampleError, prior_samples
from tests.contract import X_DIM, binary_data, build_pair, check_contract, check_pair, check_samples, contract_batch

Z = 2


# a suite pair never gets the replay's fallback warning (meant for a user's program): it replays, or
# declares replays_step = False (the sentence encoders, ACN) and runs eagerly without trying
@pytest.mark.filterwarnings("error:the training step:RuntimeWarning")
@pytest.mark.parametrize("model_name", list_models())
def test_model_contract(model_name, tmp_path):
    check_pair(model_name, guide_name_of(get_model(model_name)), tmp_path)


@pytest.mark.parametrize("model_name", list_models())
def test_model_draws_fresh_data(model_name):
    model, _ = build_pair(model_name, guide_name_of(get_model(model_name)))
    if "num_samples" not in inspect.signature(model.forward).parameters:
        pytest.skip("drawing fresh data is not part of the contract; this model does not offer it")
    x = model(num_samples=7)
    assert x.shape == (7, X_DIM) and torch.isfinite(x).all()


@pytest.mark.parametrize("model_name", list_models())
def test_model_samples_by_its_own_generative_process(model_name):
    """`pyrovae sample`'s draws: x ~ p(x) by the model's own process, or one line saying why not."""
    model, _ = build_pair(model_name, guide_name_of(get_model(model_name)))
    reason = getattr(model, "cannot_sample", None)
    if reason:
        assert "\n" not in reason and 20 < len(reason) < 160, reason
        with pytest.raises(CannotSampleError, match=f"^model '{model_name}' does not draw x ~ p\\(x\\) on its own: "):
            prior_samples(model, 3)
        return
    check_samples(model, contract_batch(model))


@pytest.mark.parametrize("model_name", list_models())
def test_model_without_data_or_num_samples_says_so(model_name):
    model, _ = build_pair(model_name, guide_name_of(get_model(model_name)))
    if "num_samples" not in inspect.signature(model.forward).parameters:
        pytest.skip("this model does not draw fresh data")
    with pytest.raises(ValueError, match="pass data x or num_samples"):
        model()


def test_every_registered_class_declares_its_hooks_through_the_contract_bases():
    """The hooks and their defaults are declared once (models/base.py, guides/base.py)."""
    from pyrovae.guides.base import Guide
    from pyrovae.registry import get_guide, list_guides

    assert [name for name in list_models() if not issubclass(get_model(name), Model)] == []
    assert [name for name in list_guides() if not issubclass(get_guide(name), Guide)] == []
    assert (Model.guide_name, Model.init_from_data, Model.data_plate, Model.cannot_sample) == ("diag", None, None, None)
    assert (Model.sequential_sampling, Model.likelihoods) == (False, None)
    assert (Guide.model_name, Guide.objective_name, Guide.has_density) == ("vae", "elbo", True)


def test_the_default_example_batch_is_binary_x_and_y_for_a_conditional_model():
    vae, _ = build_pair("vae", "diag")
    assert torch.equal(vae.example_batch(16)["x"], binary_data(16)) and set(vae.example_batch(16)) == {"x"}
    cvae, _ = build_pair("cvae", "cvae")
    batch = cvae.example_batch(8)
    assert torch.equal(batch["x"], binary_data(8)) and torch.equal(batch["y"], binary_data(8, seed=1))


# ---------------------------------------------------------------- pairs of plain functions


def plain_pair(label_dim=0, site="z"):
    """A model and guide as plain functions ``(data, y=None)`` (``y`` used when ``label_dim``),
    their networks registered by ``pyro.module``; the tests name the arguments."""
    decoder, encoder = nn.Linear(Z + label_dim, X_DIM), nn.Linear(X_DIM + label_dim, 2 * Z)

    def model(data, y=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(Z), 1.0).to_event(1))
            inputs = z if y is None else torch.cat([z, y.expand(z.shape[:-1] + y.shape[-1:])], -1)
            pyro.sample("obs", dist.Bernoulli(logits=decoder(inputs)).to_event(1), obs=data)

    def guide(data, y=None):
        pyro.module("encoder", encoder)
        loc, raw = encoder(data if y is None else torch.cat([data, y], -1)).split(Z, -1)
        with pyro.plate("data", data.shape[0]):
            pyro.sample(site, dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    return model, guide


def test_a_pair_of_plain_functions_meets_the_contract():
    model, guide = plain_pair()

    def my_model(x):
        model(x)

    def my_guide(x):
        guide(x)

    check_contract(my_model, my_guide, {"x": binary_data(8)})


def test_a_pair_with_another_batch_key_meets_the_contract():
    model, guide = plain_pair()
    check_contract(lambda image: model(image), lambda image: guide(image), {"image": binary_data(8)})


def test_a_conditional_pair_taking_x_and_y_meets_the_contract():
    model, guide = plain_pair(label_dim=3)
    y = torch.nn.functional.one_hot(torch.arange(8) % 3, 3).float()
    check_contract(lambda x, y: model(x, y), lambda x, y: guide(x, y), {"x": binary_data(8), "y": y})


def test_a_pair_that_takes_only_some_batch_keys_gets_those():
    model, guide = plain_pair()
    check_contract(lambda x: model(x), lambda x: guide(x), {"x": binary_data(8), "y": torch.zeros(8, 3)})


def test_sites_that_do_not_match_fail_the_contract():
    model, guide = plain_pair(site="w")
    with pytest.raises(AssertionError, match="sites do not match"):
        check_contract(lambda x: model(x), lambda x: guide(x), {"x": binary_data(8)})


# ---------------------------------------------------------------- rule (c): the data plate


def feature_plate_pair():
    """A model whose outermost plate is over the features (size X_DIM), the plate over the
    batch inside it: per-coordinate latents."""
    scale = nn.Parameter(torch.zeros(X_DIM))

    def model(x):
        pyro.module("scale", nn.ParameterList([scale]))
        with pyro.plate("features", X_DIM, dim=-1), pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, nn.functional.softplus(scale) + 0.1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(X_DIM))
        with pyro.plate("features", X_DIM, dim=-1), pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(loc * x, 1.0))

    return model, guide


def test_an_outermost_plate_that_is_not_the_batch_asks_for_a_declaration():
    model, guide = feature_plate_pair()
    with pytest.raises(ValueError, match="outermost plate 'features' has size 12, not the batch size 8.*data_plate"):
        check_contract(model, guide, {"x": binary_data(8)})


def test_a_declared_data_plate_is_used():
    model, guide = feature_plate_pair()
    model.data_plate = "data"
    check_contract(model, guide, {"x": binary_data(8)})


def test_the_outermost_plate_is_the_data_plate_around_a_nested_plate_of_the_same_size():
    """Sets of items: the batch is 4 sets of 4 items; the set plate (outermost) is the data
    plate, so each set gets one log-weight, the sum over its items."""
    from pyrovae.infer.importance import log_weights

    def model(x):
        with pyro.plate("sets", x.shape[0], dim=-2):
            c = pyro.sample("c", dist.Normal(x.new_zeros(1), 1.0).to_event(1))  # (S, 1, 1)
            with pyro.plate("items", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(c.squeeze(-1), 1.0), obs=x)

    def guide(x):
        loc = pyro.param("set_loc", torch.tensor(0.1))
        with pyro.plate("sets", x.shape[0], dim=-2):
            pyro.sample("c", dist.Normal(loc * x.mean(-1, keepdim=True).unsqueeze(-1), 1.0).to_event(1))

    x = torch.arange(16.0).reshape(4, 4) / 16
    check_contract(model, guide, {"x": x})
    with torch.no_grad():
        log_w, guide_trace, model_trace = log_weights(model, guide, {"x": x}, 3, return_traces=True)
    expected = (model_trace.nodes["c"]["log_prob"] + model_trace.nodes["x"]["log_prob"].sum(-1, keepdim=True)
                - guide_trace.nodes["c"]["log_prob"])  # (K, S, 1)
    torch.testing.assert_close(log_w, expected.squeeze(-1))
