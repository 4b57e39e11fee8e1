"""fit(compile=True) / --compile: the pair's networks compiled by torch.compile on the CPU, the
same loss and gradients as eager to float rounding, refused in one line where it does not apply."""

import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import fit
from pyrovae.bench.runners import user_pair
from pyrovae.errors import UsageError
from pyrovae.guides import DiagNormalGuide, IAFGuide
from pyrovae.infer.importance import preserved_rng
from pyrovae.infer.objectives import ELBO, IWAE
from pyrovae.models import VAE
from pyrovae.training.step import LossModule, check_compilable, compiled_networks, pair_networks, quiet_pyro_modules
from tests.cli.helpers import QUICK, environ, one_line_error


def data(n=20, x_dim=12, seed=1):
    return torch.bernoulli(torch.rand(n, x_dim, generator=torch.Generator().manual_seed(seed)))


def suite_pair(guide="diag"):
    torch.manual_seed(0)
    model = VAE(12, 3, (16,))
    return model, (IAFGuide(12, 3, (16,), num_flows=2) if guide == "iaf" else DiagNormalGuide(12, 3, (16,)))


def test_the_networks_of_suite_pairs_and_of_plain_function_pairs():
    model, guide = suite_pair()
    assert pair_networks(model, guide) == [model.decoder, guide.encoder]
    model, iaf = suite_pair("iaf")
    found = pair_networks(model, iaf)
    assert found[:2] == [model.decoder, iaf.encoder]
    assert [type(m).__name__ for m in found[2:]] == ["ConditionalAutoRegressiveNN"] * 2  # inside the flows
    pyro.clear_param_store()
    m, g = user_pair(torch.nn.Linear(2, 12), torch.nn.Linear(12, 4), 2)
    batch = {"x": data()}
    assert pair_networks(m, g) == []  # functions hold nothing ...
    assert pair_networks(m, g, lambda: ELBO()(m, g, batch)) == [g.encoder, m.decoder]  # ... but name their nets


def test_compiled_networks_are_restored_afterwards():
    model, guide = suite_pair()
    compiled = compiled_networks([model.decoder])
    with compiled:
        assert "forward" in model.decoder.__dict__
    assert "forward" not in model.decoder.__dict__
    assert list(model.decoder.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_compile_is_refused_in_one_line_where_it_does_not_apply(monkeypatch):
    with pytest.raises(UsageError, match="on a GPU fit captures the step in a CUDA graph"):
        check_compilable("cuda", False)
    with pytest.raises(UsageError, match="data-parallel"):
        check_compilable("cpu", True)
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(UsageError, match=r"needs a C\+\+ compiler \(no-such-compiler-here\)"):
        check_compilable("cpu", False)
    monkeypatch.delenv("CXX")

    w = torch.nn.Parameter(torch.zeros(3))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + 0 * w.sum(), 1.0).to_event(1))

    pyro.clear_param_store()
    with pytest.raises(UsageError, match="the pair has no networks to compile"):
        fit(model, guide, torch.randn(8, 3), epochs=1, batch_size=4, progress=False, compile=True, device="cpu")


def test_the_cli_refuses_compile_without_a_compiler_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "pyrovae.cli", "fit", "--data", "digits", *QUICK, "--out", str(out),
                             "--compile", "--device", "cpu"], capture_output=True, text=True,
                            env=environ({"CXX": "no-such-compiler-here"}), timeout=300)
    one_line_error(result, 2, "--compile", "C++ compiler")
    assert not out.exists()


def loss_and_grads(module, quiet, compiled, batch, params):
    with preserved_rng(), pyro.validation_enabled(False), quiet, compiled:
        loss = module(batch, 0)
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.slow  # torch.compile takes seconds per network and shape
@pytest.mark.parametrize("pair, objective", [("diag", ELBO()), ("iaf", ELBO()), ("user", ELBO()),
                                             ("user", IWAE(num_particles=3))])
def test_the_compiled_step_has_the_eager_loss_and_gradients(pair, objective):
    pyro.clear_param_store()
    if pair == "user":
        net_model, net_guide = suite_pair()
        model, guide = user_pair(net_model.decoder, net_guide.encoder, 3)
    else:
        model, guide = suite_pair(pair)
    batch = {"x": data()}
    module = LossModule(model, guide, objective)
    with pyro.validation_enabled(False):
        networks = pair_networks(model, guide, lambda: module(batch, 0))
    params = [p for m in networks for p in m.parameters()]
    quiet = quiet_pyro_modules(model, guide)
    eager = loss_and_grads(module, quiet, compiled_networks([]), batch, params)
    compiled = loss_and_grads(module, quiet, compiled_networks(networks), batch, params)
    assert torch.allclose(eager[0], compiled[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(eager[1], compiled[1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fit_with_compile_trains_as_eager_does(tmp_path):
    x = data(60)
    runs = []
    for compile in (False, True):
        model, guide = suite_pair()
        result = fit(model, guide, x, epochs=2, batch_size=20, progress=False, compile=compile, device="cpu",
                     out_dir=tmp_path / str(compile))
        runs.append([m["train_loss"] for m in result.metrics])
        assert "forward" not in model.decoder.__dict__
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


@pytest.mark.slow  # twelve small compilations
def test_every_network_is_compiled_however_many_classes_the_pair_has():
    # dynamo runs every compiled bound method through one wrapper whose cache holds an entry per
    # network class; past its recompile_limit (8) the rest ran eagerly without a word
    import torch._dynamo.utils as dynamo_utils

    from pyrovae.training.step import compiled_networks

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    nets = [type(f"Net{i}", (torch.nn.Linear,), {})(4, 4) for i in range(12)]
    with compiled_networks(nets):
        for net in nets:
            net(torch.randn(3, 4))
    assert dynamo_utils.counters["frames"]["ok"] == 12
    assert torch._dynamo.config.recompile_limit == 8  # restored


@pytest.mark.slow
def test_m2s_enumerated_objective_compiles_and_trains_as_eager_does(tmp_path):
    # fit found the networks to compile by a pass of the loss under no_grad, and TraceEnum_ELBO
    # refuses a loss without gradients ("ELBO is cannot be differentiated"): --compile failed for M2
    from pyrovae.infer.enum import EnumELBO

    from tests.training.test_replay import labelled_data, m2_pair

    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        model, guide = m2_pair()
        result = fit(model, guide, labelled_data(), objective=EnumELBO(alpha=5.0), epochs=2, batch_size=10,
                     seed=3, progress=False, figures=False, compile=compile, device="cpu",
                     out_dir=tmp_path / str(compile))
        runs.append([m["train_loss"] for m in result.metrics])
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)
