"""A user's pair written as plain Pyro functions (``pyro.module`` in model and guide) trains
through fit's quiet step with the same numbers as through Pyro's statements, and
``pyrovae bench`` times it beside the suite's pairs."""

import json
import subprocess
import sys

import pyro
import pytest
import torch

from pyrovae import fit
from pyrovae.bench.reference import PlainVAE
from pyrovae.bench.runners import make_pair, user_pair
from pyrovae.guides import DiagNormalGuide
from pyrovae.infer import fast_path
from pyrovae.infer.importance import log_weights
from pyrovae.infer.objectives import ELBO, IWAE, MeanFieldELBO
from pyrovae.models import VAE
from pyrovae.training.step import quiet_pyro_modules

PYRO_MODULE = pyro.module


def small_user_pair(seed=0, tag=""):
    torch.manual_seed(seed)
    model, guide = VAE(12, 3, (16,)), DiagNormalGuide(12, 3, (16,))
    plain = PlainVAE(model, guide)
    return (*user_pair(model.decoder, guide.encoder, 3, tag), plain)


def data(n=20, x_dim=12, seed=1):
    return torch.bernoulli(torch.rand(n, x_dim, generator=torch.Generator().manual_seed(seed)))


def loss_and_grads(fn, params, seed=3):
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        loss = fn()
    return loss.detach(), torch.autograd.grad(loss, params)


def param_sites(fn, **batch):
    with pyro.poutine.trace(param_only=True) as tracer:
        fn(**batch)
    return [name for name, site in tracer.trace.nodes.items() if site["type"] == "param"]


def test_quiet_module_statements_change_nothing_but_the_statements():
    pyro.clear_param_store()
    model, guide, _ = small_user_pair()
    batch = {"x": data()}
    params = list(model.decoder.parameters()) + list(guide.encoder.parameters())
    guide(**batch), model(**batch)  # the statements register the networks, as fit's first trace does
    quiet = quiet_pyro_modules(model, guide)
    assert quiet.statements and not quiet.enabled  # no PyroModules, but module statements
    for objective in (ELBO(), MeanFieldELBO(), IWAE(num_particles=4)):
        a = loss_and_grads(lambda: objective(model, guide, batch, 0), params)
        with quiet:
            b = loss_and_grads(lambda: objective(model, guide, batch, 0), params)
        assert torch.equal(a[0], b[0]) and all(torch.equal(u, v) for u, v in zip(a[1], b[1]))
    with quiet:
        assert param_sites(guide, **batch) == []  # no statement issued while quiet
    assert len(param_sites(guide, **batch)) == len(list(guide.encoder.parameters()))  # and back afterwards
    assert pyro.module is PYRO_MODULE and pyro.primitives.module is PYRO_MODULE


def test_quiet_module_statements_fall_back_to_pyros_where_they_would_do_something():
    pyro.clear_param_store()
    model, guide, _ = small_user_pair()
    x = data()
    with quiet_pyro_modules(model, guide):
        assert len(param_sites(guide, x=x)) == 4  # not registered yet: Pyro's statement registers
        assert "encoder$$$0.weight" in pyro.get_param_store()
        assert param_sites(guide, x=x) == []  # now registered: nothing to do
        guide.encoder[0].weight = torch.nn.Parameter(guide.encoder[0].weight.detach().clone())
        assert len(param_sites(guide, x=x)) == 4  # a replaced parameter: Pyro's statement again
        frozen = torch.nn.Linear(12, 6)
        frozen.weight.requires_grad_(False)
        with pytest.warns(UserWarning, match="requires_grad=False"):  # Pyro's own statement, and its warning
            pyro.module("frozen", frozen)
        assert "frozen$$$weight" not in pyro.get_param_store() and "frozen$$$bias" in pyro.get_param_store()


def test_quiet_module_statements_are_off_when_pyros_internals_change(monkeypatch):
    monkeypatch.setattr(fast_path, "PYRO_INTERNALS_SUPPORTED", False)
    quiet = quiet_pyro_modules(lambda x: x)
    with quiet:
        assert pyro.module is PYRO_MODULE
    assert not quiet.statements


def test_fit_of_a_plain_function_pair_is_the_same_with_and_without_the_quiet_statements(monkeypatch):
    x = data(60)
    runs, fallbacks = [], []
    monkeypatch.setattr(fast_path, "_PYRO_MODULE", lambda *a, **k: fallbacks.append(a[0]) or PYRO_MODULE(*a, **k))
    for quiet in (True, False):
        pyro.clear_param_store()
        model, guide, _ = small_user_pair()
        monkeypatch.setattr(ELBO, "quiet_modules", quiet)
        result = fit(model, guide, x, epochs=2, batch_size=20, progress=False)
        if quiet:
            assert fallbacks == []  # every step's statements were answered at once
        runs.append(([m["train_loss"] for m in result.metrics],
                     [p.detach().clone() for p in list(model.decoder.parameters()) + list(guide.encoder.parameters())]))
    (losses_a, params_a), (losses_b, params_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert not torch.equal(params_a[0], small_user_pair()[0].decoder[0].weight)  # it did train


def test_the_plain_reference_computes_the_user_pairs_log_weights():
    pyro.clear_param_store()
    model, guide, plain = small_user_pair()
    x = data(7)
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        ours = log_weights(model, guide, {"x": x}, 5)
        pyro.set_rng_seed(1)
        theirs = plain.log_weights(x, 5)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_make_pair_refuses_an_unknown_pair():
    with pytest.raises(ValueError, match="unknown pair 'nope'"):
        make_pair("nope", "cpu")


def test_pyrovae_bench_times_a_users_plain_function_pair(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pyrovae.cli", "bench", "--guides", "diag", "user", "--objectives",
                           "elbo", "--batch-sizes", "20", "--blocks", "1", "--block-seconds", "0.01",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["table"]
    assert [r["guide"] for r in rows] == ["diag", "user"]
    assert all(r["suite ms"] > 0 and r["plain ms"] > 0 for r in rows)
    assert "| cpu | user | elbo | 20 |" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "pyrovae.cli", "bench", "--guides", "nope"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr


def test_the_quiet_statements_walk_the_parameters_as_torch_names_them():
    shared = torch.nn.Linear(3, 3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), shared, torch.nn.Tanh(), shared, torch.nn.Linear(3, 2, bias=False))
    net.extra = torch.nn.Parameter(torch.ones(2))
    net[4].weight2 = net[0].weight  # one tensor under two names: the first kept, as torch does
    for module in (net, DiagNormalGuide(12, 3, (16,)), VAE(12, 3, (16,))):
        assert [(n, id(p)) for n, p in fast_path._named_parameters(module)] == \
               [(n, id(p)) for n, p in module.named_parameters()]
