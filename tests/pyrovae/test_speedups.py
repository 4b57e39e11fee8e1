"""Every speed-up of the training step leaves the numbers alone: the lean ELBOs against Pyro's
Trace_ELBO / TraceMeanField_ELBO (the model's gradients bit for bit at the same seed, the
guide's to float rounding where log q comes from a Normal draw's noise, the loss to float
rounding: Trace_ELBO sums its value in float64), quiet PyroModules, particle chunks against the
unchunked bound, the captured-step logic, bf16 autocast and the evaluation batching."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroSample

from pyrovae import fit, log_likelihood
from pyrovae.training.cuda_graph import GraphedStep, graph_safe, static_from
from pyrovae.training.step import LossModule, TrainStep, as_store_parameters, make_optimizer, quiet_pyro_modules
from pyrovae.evaluation.log_likelihood import default_max_pass
from pyrovae.guides import DiagNormalGuide
from pyrovae.infer.fast_path import mean_field_elbo_loss, trace_elbo_loss
from pyrovae.models import VAE
from pyrovae.infer.objectives import ELBO, IWAE, MeanFieldELBO, RenyiBound
from pyrovae.infer.importance import log_weights


def pair(x_dim=12, z_dim=3, seed=0):
    torch.manual_seed(seed)
    return VAE(x_dim, z_dim, (16,)), DiagNormalGuide(x_dim, z_dim, (16,))


def data(n=20, x_dim=12, seed=1):
    return torch.bernoulli(torch.rand(n, x_dim, generator=torch.Generator().manual_seed(seed)))


def loss_and_grads(fn, params, seed=3, validation=False):
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(validation):
        loss = fn()
    return loss.detach(), torch.autograd.grad(loss, params)


def assert_identical(a, b):
    (la, ga), (lb, gb) = a, b
    assert torch.equal(la, lb), (la.item(), lb.item())
    assert all(torch.equal(u, v) for u, v in zip(ga, gb))


def assert_rounding(u, v, rtol=1e-5, atol=1e-6):
    """Equal to float rounding, relative to the size of the tensor's entries."""
    assert u.shape == v.shape
    u, v = u.detach(), v.detach()
    assert float((u - v).abs().max()) <= rtol * float(u.abs().max()) + atol, float((u - v).abs().max())


def assert_same_bound(a, b, exact=0):
    """The loss to float rounding (Trace_ELBO's value is a float64 sum of the sites' ``.item()`` s,
    the lean loss the float32 surrogate); the first ``exact`` gradients (the model's, which log q
    does not reach) bit for bit, the others to float rounding (log q of a Normal guide site from
    its draw's noise, pyrovae.infer.importance.noise_log_prob)."""
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, rtol=1e-6, atol=1e-6), (la.item(), lb.item())
    assert all(torch.equal(u, v) for u, v in zip(ga[:exact], gb[:exact]))
    for u, v in zip(ga[exact:], gb[exact:]):
        assert_rounding(u, v)


def plain_functions(x_dim=12, z_dim=3):
    """A plain-function pair with pyro.module, a constrained pyro.param, poutine.scale and a mask."""
    torch.manual_seed(2)
    decoder = torch.nn.Linear(z_dim, x_dim)
    encoder = torch.nn.Linear(x_dim, z_dim)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            with pyro.poutine.scale(scale=0.7), pyro.poutine.mask(mask=x[:, 0] > 0):
                pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        scale = pyro.param("scale", torch.full((z_dim,), 0.5), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(encoder(x), scale).to_event(1))

    return model, guide, [decoder.weight, encoder.weight]


@pytest.mark.parametrize("ours, theirs", [(trace_elbo_loss, Trace_ELBO), (mean_field_elbo_loss, TraceMeanField_ELBO)])
def test_lean_elbos_equal_pyros(ours, theirs):
    model, guide = pair()
    x = data()
    params = list(model.parameters()) + list(guide.parameters())
    a = loss_and_grads(lambda: theirs().differentiable_loss(model, guide, x=x), params)
    b = loss_and_grads(lambda: ours(model, guide, {"x": x}), params)
    assert_same_bound(a, b, exact=len(list(model.parameters())))
    if theirs is TraceMeanField_ELBO:  # its value is the surrogate itself, the KL analytic: bit for bit
        assert_identical(a, b)
    # a plain-function pair with a param-store tensor, a scale and a mask
    model, guide, params = plain_functions()
    pyro.set_rng_seed(0)
    guide(x)
    params = params + [pyro.param("scale").unconstrained()]
    a = loss_and_grads(lambda: theirs().differentiable_loss(model, guide, x=x), params)
    b = loss_and_grads(lambda: ours(model, guide, {"x": x}), params)
    assert_same_bound(a, b, exact=1)


@pytest.mark.parametrize("ours, theirs", [(trace_elbo_loss, Trace_ELBO), (mean_field_elbo_loss, TraceMeanField_ELBO)])
def test_lean_elbos_per_datapoint_equal_pyros_divided(ours, theirs):
    """The per-datapoint loss as fit takes it (``divide_by``: one division by -N; the ELBO's
    sites added elementwise and summed once): the model's gradients bit for bit against Pyro's
    loss divided by N, and meanfield's value too."""
    model, guide = pair()
    x = data()
    params = list(model.parameters()) + list(guide.parameters())
    a = loss_and_grads(lambda: theirs().differentiable_loss(model, guide, x=x) / len(x), params)
    b = loss_and_grads(lambda: ours(model, guide, {"x": x}, len(x)), params)
    assert_same_bound(a, b, exact=len(list(model.parameters())))
    if theirs is TraceMeanField_ELBO:
        assert_identical(a, b)


@pytest.mark.parametrize("objective, beta", [(ELBO, 1.0), (ELBO, 0.3), (MeanFieldELBO, 0.3)])
def test_objectives_lean_path_equals_validated_pyro_path(objective, beta):
    model, guide = pair()
    batch = {"x": data()}
    params = list(model.parameters()) + list(guide.parameters())
    obj = objective(beta=beta, warmup_steps=4)
    a = loss_and_grads(lambda: obj(model, guide, batch, 1), params, validation=True)  # Pyro's path
    b = loss_and_grads(lambda: obj(model, guide, batch, 1), params)  # lean
    assert_same_bound(a, b, exact=len(list(model.parameters())))


def test_score_function_guides_get_pyros_surrogate():
    """A discrete latent without rsample: the lean path hands the recorded run to Pyro."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(c * 2.0, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.6), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(p))

    x = torch.linspace(-1, 3, 9)
    pyro.set_rng_seed(0)
    guide(x)
    params = [pyro.param("p").unconstrained()]
    a = loss_and_grads(lambda: Trace_ELBO().differentiable_loss(model, guide, x=x), params)
    b = loss_and_grads(lambda: trace_elbo_loss(model, guide, {"x": x}), params)
    assert_identical(a, b)
    assert a[1][0].abs() > 0  # the score-function term is there


def test_lean_log_weights_equal_traced_ones():
    model, guide = pair()
    batch = {"x": data()}
    pyro.set_rng_seed(4)
    lean = log_weights(model, guide, batch, 7)
    pyro.set_rng_seed(4)
    traced, _, _ = log_weights(model, guide, batch, 7, return_traces=True)
    assert lean.shape == (7, 20)
    assert_rounding(lean, traced)  # log q from the draws' noise, to float rounding


@pytest.mark.parametrize("flow", [False, True], ids=["diag", "iaf"])
def test_quiet_pyro_modules_change_nothing_but_the_statements(flow):
    """Quiet statements and lean plates (an IAF guide's TransformedDistribution kept unexpanded
    too): the same losses and gradients, bit for bit."""
    model, guide = pair()
    if flow:
        from pyrovae.guides import IAFGuide

        guide = IAFGuide(12, 3, (16,), num_flows=2)
    batch = {"x": data()}
    params = list(model.parameters()) + list(guide.parameters())
    quiet = quiet_pyro_modules(model, guide)
    assert quiet.enabled
    for objective in (ELBO(), MeanFieldELBO(), IWAE(num_particles=4)):
        a = loss_and_grads(lambda: objective(model, guide, batch, 0), params)
        with quiet:
            b = loss_and_grads(lambda: objective(model, guide, batch, 0), params)
        assert_identical(a, b)
    with quiet, pyro.poutine.trace(param_only=True) as tracer:
        guide(**batch)
    assert not tracer.trace.nodes  # no param statements while quiet
    with pyro.poutine.trace(param_only=True) as tracer:
        guide(**batch)
    assert len(tracer.trace.nodes) == len(list(guide.parameters()))  # and back afterwards


def test_quiet_is_off_for_modules_with_pyro_samples():
    class Bayesian(PyroModule):
        def __init__(self):
            super().__init__()
            self.w = PyroSample(dist.Normal(0.0, 1.0))

    assert not quiet_pyro_modules(Bayesian()).enabled
    assert not quiet_pyro_modules(lambda x: x).enabled


def test_store_tensors_become_parameters_in_place():
    pyro.param("s", torch.ones(2), constraint=dist.constraints.positive)
    tensor = pyro.get_param_store()._params["s"]
    marked = as_store_parameters({"s": tensor})["s"]
    assert marked is tensor and isinstance(tensor, torch.nn.Parameter)
    module = LossModule(lambda x: None, lambda x: None, ELBO(), {"s": tensor})
    assert list(module.parameters()) == [tensor]
    assert pyro.param("s").unconstrained() is tensor


def test_particle_chunks_give_the_unchunked_gradient_on_the_same_draws():
    model, guide = pair()
    batch = {"x": data(8)}
    params = list(model.parameters()) + list(guide.parameters())
    chunked = IWAE(num_particles=10, particle_chunk=4)
    plain = IWAE(num_particles=10)
    pyro.set_rng_seed(6)
    with pyro.validation_enabled(False):
        loss = chunked(model, guide, batch)
    grads = torch.autograd.grad(loss, params)
    # the same draws, all chunks' graphs alive at once: the unchunked computation
    pyro.set_rng_seed(6)
    with pyro.validation_enabled(False):
        log_w = torch.cat([plain._log_weights(model, guide, batch, k, 1) for k in (4, 4, 2)])
    reference = -(torch.logsumexp(log_w, 0) - math.log(10)).mean()
    expected = torch.autograd.grad(reference, params)
    assert torch.allclose(loss, reference, rtol=1e-6)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-7)
    assert chunked.options.particle_chunk == 4 and plain.options.particle_chunk == 0


def test_particle_chunk_at_least_k_is_the_plain_bound():
    model, guide = pair()
    batch = {"x": data(8)}
    params = list(guide.parameters())
    with pyro.validation_enabled(False):
        a = loss_and_grads(lambda: RenyiBound(alpha=0.5, num_particles=5)(model, guide, batch), params)
        b = loss_and_grads(lambda: RenyiBound(alpha=0.5, num_particles=5, particle_chunk=5)(model, guide, batch), params)
    assert_identical(a, b)
    with pytest.raises(ValueError, match="particle_chunk"):
        IWAE(particle_chunk=-1)


class CPUGraph(GraphedStep):
    """The capture logic without CUDA: 'capture' remembers the step, 'replay' runs it on the
    static buffers (what a CUDA graph replays)."""

    def _warmup(self, batch, step):
        self.warmed += 1
        return self.step(batch, step)

    def _record(self, static_batch, step):  # a capture runs nothing
        self.captured_at = step
        return "graph", None

    def _replay(self):
        self.static_loss = self.step(self.static_batch, self.captured_at)


class FailingCapture(CPUGraph):
    def _record(self, static_batch, step):
        raise RuntimeError("operation not permitted when stream is capturing")

    def _recover(self):
        pass


def _train(runner_class, batches, **kwargs):
    model, guide = pair()
    module = LossModule(model, guide, ELBO())
    step_fn = TrainStep(module, make_optimizer(list(module.parameters()), 1e-2, "cpu"), quiet=quiet_pyro_modules(model, guide))
    runner = runner_class(step_fn, **kwargs)
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(False):
        losses = [runner(batch, i) for i, batch in enumerate(batches)]
    return runner, torch.stack(losses), torch.cat([p.detach().flatten() for p in module.parameters()])


def test_captured_step_logic_replays_full_batches_and_runs_the_rest_eagerly():
    x = data(65)
    batches = [{"x": x[i:i + 10]} for i in range(0, 65, 10)] * 2  # 6 full + 1 partial, twice
    eager, eager_losses, eager_params = _train(GraphedStep, batches, enabled=False)
    graphed, losses, params = _train(CPUGraph, batches, warmup=2)
    assert torch.equal(losses, eager_losses) and torch.equal(params, eager_params)
    assert graphed.warmed == 2 and graphed.replays == 14 - 2 - 2 and graphed.eager_steps == 2
    # a capture that fails: a warning, then eager steps with the same numbers
    with pytest.warns(RuntimeWarning, match="capture of the training step failed"):
        failed, losses, params = _train(FailingCapture, batches, warmup=1)
    assert not failed.enabled and failed.replays == 0
    assert torch.equal(losses, eager_losses) and torch.equal(params, eager_params)


def test_captured_step_waits_for_the_kl_warmup():
    x = data(40)
    batches = [{"x": x[i:i + 10]} for i in range(0, 40, 10)] * 2
    graphed, _, _ = _train(CPUGraph, batches, warmup=1, static_from=5)
    assert graphed.eager_steps == 5 and graphed.warmed == 1 and graphed.replays == 2
    assert static_from(ELBO(warmup_steps=100)) == 99 and static_from(ELBO()) == 0


def test_only_the_suites_own_objectives_are_captured():
    class Custom(ELBO):
        def __call__(self, model, guide, batch, step=None):
            return super().__call__(model, guide, batch, step) * (step or 1)

    assert graph_safe(ELBO()) and graph_safe(IWAE())
    assert not graph_safe(Custom()) and not graph_safe(lambda m, g, b, s: 0)


def test_bf16_fit_runs_on_cpu_and_unknown_precision_fails_early(tmp_path):
    model, guide = pair(64, 4)
    result = fit(model, guide, "digits", epochs=2, batch_size=100, lr=3e-3, precision="bf16", progress=False,
                 cuda_graphs=False)
    assert all(math.isfinite(m["train_loss"]) for m in result.metrics)
    with pytest.raises(ValueError, match="precision must be one of"):
        fit(*pair(64, 4), "digits", precision="fp16", out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_evaluation_passes_fill_the_device():
    assert default_max_pass(torch.device("cpu")) < default_max_pass(torch.device("cuda"))
    model, guide = pair()
    x = data(30)
    pyro.set_rng_seed(0)
    small = log_likelihood(model, guide, x, num_samples=40, batch_size=7, max_pass=13)
    pyro.set_rng_seed(0)
    auto = log_likelihood(model, guide, x, num_samples=40)
    # different chunkings draw different particles: the same estimate within noise
    assert abs(small.log_likelihood - auto.log_likelihood) < 0.5
    assert small.per_datapoint.shape == auto.per_datapoint.shape == (30,)


@pytest.mark.cuda
def test_cuda_graph_fit_matches_eager_fit():
    kwargs = dict(epochs=2, batch_size=100, lr=1e-3, seed=3, device="cuda", progress=False)
    model, guide = pair(64, 4)
    graphed = fit(model, guide, "digits", cuda_graphs=True, **kwargs)
    model2, guide2 = pair(64, 4)
    eager = fit(model2, guide2, "digits", cuda_graphs=False, **kwargs)
    for a, b in zip(graphed.metrics, eager.metrics):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
    assert graphed.metrics[-1]["valid_elbo"] > graphed.metrics[0]["valid_elbo"] - 1


@pytest.mark.cuda
def test_cuda_graph_fit_resumes_exactly(tmp_path):
    kwargs = dict(epochs=3, batch_size=100, lr=1e-3, seed=3, device="cuda", progress=False, cuda_graphs=True)
    straight = fit(*pair(64, 4), "digits", out_dir=tmp_path / "a", **kwargs)
    fit(*pair(64, 4), "digits", out_dir=tmp_path / "b", **{**kwargs, "epochs": 2})
    resumed = fit(*pair(64, 4), "digits", out_dir=tmp_path / "b", resume=True, **kwargs)
    assert [m["train_loss"] for m in straight.metrics] == [m["train_loss"] for m in resumed.metrics]


@pytest.mark.cuda
def test_bf16_on_cuda_keeps_the_bound_close():
    kwargs = dict(epochs=3, batch_size=100, lr=3e-3, seed=0, device="cuda", progress=False)
    fp32 = fit(*pair(64, 4), "digits", **kwargs).metrics[-1]["valid_elbo"]
    bf16 = fit(*pair(64, 4), "digits", precision="bf16", **kwargs).metrics[-1]["valid_elbo"]
    assert abs(fp32 - bf16) < 1.0


@pytest.mark.parametrize("guide_name", ["diag", "iaf"])
def test_the_benchmarks_plain_reference_computes_the_same_log_weights(guide_name):
    from pyrovae.bench.reference import PlainVAE
    from pyrovae.guides import IAFGuide

    torch.manual_seed(0)
    model = VAE(12, 3, (16,))
    guide = IAFGuide(12, 3, (16,), num_flows=2) if guide_name == "iaf" else DiagNormalGuide(12, 3, (16,))
    plain, x = PlainVAE(model, guide), data(7)
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        ours = log_weights(model, guide, {"x": x}, 5)
        pyro.set_rng_seed(1)
        theirs = plain.log_weights(x, 5)  # the same draws: both take (K, B, z_dim) standard normals
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_fit_keeps_the_param_statements_for_objectives_that_read_them():
    class CountingParams(ELBO):
        quiet_modules = False

        def __call__(self, model, guide, batch, step=None):
            with pyro.poutine.trace(param_only=True) as tracer:
                guide(**batch)
            self.counts.append(len(tracer.trace.nodes))
            return super().__call__(model, guide, batch, step)

    model, guide = pair(64, 4)
    objective = CountingParams()
    objective.counts = []
    fit(model, guide, "digits", objective=objective, epochs=1, batch_size=300, progress=False)
    assert set(objective.counts) == {len(list(guide.parameters()))}


def test_torchs_notice_about_the_sync_debug_mode_is_not_taken_for_a_host_sync():
    # the graph was switched off on every first fit of a process by this one-off notice
    # (seen on an H200: fit ran eagerly at 3.5 ms/step instead of 0.3 ms/step)
    from pyrovae.training.cuda_graph import sort_sync_warnings

    def caught(message):
        return warnings.WarningMessage(UserWarning(message), UserWarning, "x.py", 1)

    notice = caught("Synchronization debug mode is a prototype feature and does not yet detect all "
                    "synchronizing operations (Triggered internally at Module.cpp:1003.)")
    sync = caught("called a synchronizing CUDA operation (Triggered internally at CUDAFunctions.cpp:159.)")
    own = caught("the step's own warning")
    assert sort_sync_warnings([notice, own]) == ([], [own])
    assert sort_sync_warnings([notice, sync, own]) == ([sync], [own])


def test_iwae_equals_the_bound_on_pyros_traces():
    """IWAE's step (the lean run, no views for (K, N) log-densities, no scaling by 1 - alpha = 1,
    log q from the draws' noise) gives the loss and gradients of the bound computed from Pyro's
    own traces, to float rounding (the model's gradients too: the particles' weights hold log q)."""
    from pyrovae.infer.importance import log_mean_exp

    model, guide = pair()
    batch = {"x": data()}
    params = list(model.parameters()) + list(guide.parameters())
    with pyro.validation_enabled(False):
        a = loss_and_grads(lambda: IWAE(num_particles=6)(model, guide, batch), params)
        b = loss_and_grads(lambda: -(log_mean_exp(1.0 * log_weights(model, guide, batch, 6, return_traces=True)[0], 0)
                                     / 1.0).mean(), params)
    assert_same_bound(a, b)


@pytest.mark.parametrize("case", ["bernoulli logits", "bernoulli probs", "bernoulli broadcast", "normal", "normal 2 dims"])
def test_lean_log_prob_equals_torchs_bit_for_bit(case):
    """importance.log_prob (the lean sites' density) against the distribution's own log_prob:
    the same values and gradients, bit for bit."""
    from pyrovae.infer.importance import log_prob

    g = torch.Generator().manual_seed(0)
    raw = torch.randn(4, 6, 9, generator=g).requires_grad_()
    x = torch.bernoulli(torch.full((6, 9), 0.4), generator=g)
    if case == "bernoulli logits":
        fn, value = dist.Bernoulli(logits=raw, validate_args=False).to_event(1), x.expand(4, 6, 9)
    elif case == "bernoulli probs":
        fn, value = dist.Bernoulli(probs=torch.sigmoid(raw), validate_args=False).to_event(1), x.expand(4, 6, 9)
    elif case == "bernoulli broadcast":  # IWAE: (K, N, D) logits, (N, D) data
        fn, value = dist.Bernoulli(logits=raw, validate_args=False).to_event(1), x
    elif case == "normal":
        fn, value = dist.Normal(raw, torch.nn.functional.softplus(raw) + 0.1).to_event(1), raw.detach() * 0.3
    else:
        fn, value = dist.Normal(raw, 1.0).to_event(2), raw.detach() * 0.3
    weights = torch.randn(fn.batch_shape, generator=g)
    ours, theirs = log_prob(fn, value), fn.log_prob(value)
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)
    g_ours = torch.autograd.grad((ours * weights).sum(), raw, retain_graph=True)[0]  # probs: shared cached logits
    g_theirs = torch.autograd.grad((theirs * weights).sum(), raw)[0]
    assert torch.equal(g_ours, g_theirs)


@pytest.mark.parametrize("case", ["normal", "to_event 1", "to_event 2", "particles", "tiny scales"])
def test_noise_log_prob_equals_torchs_to_rounding(case):
    """A Normal draw that keeps its noise (importance.noise_keeping): the same draw bit for bit
    at the same seed; log q from the noise equal to torch's log_prob at the draw, and its
    gradient (the pathwise total derivative, through the draw and the parameters) equal to
    torch's, both to float rounding."""
    from pyrovae.infer.importance import log_prob, noise_keeping, noise_log_prob

    g = torch.Generator().manual_seed(1)
    loc = torch.randn(6, 4, generator=g).requires_grad_()
    raw = torch.randn(6, 4, generator=g).requires_grad_()
    scale = torch.nn.functional.softplus(raw) + (1e-4 if case == "tiny scales" else 0.1)
    fn = dist.Normal(loc, scale, validate_args=False)
    if case in ("to_event 1", "particles", "tiny scales"):
        fn = fn.to_event(1)
    elif case == "to_event 2":
        fn = fn.to_event(2)
    keeping = noise_keeping(fn)
    if case == "particles":  # a particle plate's broadcast, after the recorder
        fn, keeping = fn.expand((3, 6)), keeping.expand((3, 6))
    torch.manual_seed(5)
    z_torch = fn.rsample()
    torch.manual_seed(5)
    z = keeping.rsample()
    assert torch.equal(z, z_torch)
    ours, theirs = noise_log_prob(keeping, z), fn.log_prob(z)
    assert ours is not None and ours.shape == theirs.shape
    assert_rounding(ours, theirs)
    assert torch.equal(log_prob(keeping, z), ours)  # what the lean losses call
    weights = torch.randn(theirs.shape, generator=g)
    g_ours = torch.autograd.grad((ours * weights).sum(), (loc, raw), retain_graph=True, allow_unused=True)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), (loc, raw))
    assert g_ours[0] is None  # d log q / d loc is 0 along the path, exactly: no terms to cancel
    g_ours = (torch.zeros_like(loc), g_ours[1])
    for u, v in zip(g_theirs, g_ours):
        assert_rounding(u, v, atol=1e-6 * float(g_theirs[1].abs().max()))  # torch's cancels terms of size eps / scale


def test_noise_log_prob_only_for_its_own_draw():
    """Any other value, a validating Normal, a subclass or a masked Normal take torch's
    log_prob: the noise describes one draw only."""
    from pyrovae.infer.importance import log_prob, noise_keeping, noise_log_prob

    fn = noise_keeping(dist.Normal(torch.zeros(3), torch.ones(3), validate_args=False).to_event(1))
    z = fn.rsample()
    other = z.clone()
    assert noise_log_prob(fn, other) is None and torch.equal(log_prob(fn, other), fn.log_prob(other))
    assert noise_log_prob(noise_keeping(dist.Normal(0.0, 1.0, validate_args=False)), z) is None  # nothing drawn yet

    class MyNormal(dist.Normal):
        pass

    assert noise_keeping(dist.Normal(torch.zeros(3), 1.0, validate_args=True)) is None
    assert noise_keeping(MyNormal(torch.zeros(3), 1.0, validate_args=False)) is None
    assert noise_keeping(dist.Normal(torch.zeros(3), 1.0, validate_args=False).mask(False)) is None


@pytest.mark.parametrize("which", ["suite", "plain functions"])
def test_guide_runs_keep_the_noise_of_normal_draws(which):
    """run_pair (every lean loss) takes the guide's Normal sites' log q from their noise; the
    model's sites, replayed, keep torch's densities."""
    from pyrovae.bench.runners import user_pair
    from pyrovae.infer.importance import noise_log_prob, run_pair

    model, guide = pair()
    if which == "plain functions":
        model, guide = user_pair(model.decoder, guide.encoder, 3, tag="-noise")
    with pyro.validation_enabled(False):
        guide_sites, model_sites = run_pair(model, guide, {"x": data()})
    assert noise_log_prob(guide_sites["z"]["fn"], guide_sites["z"]["value"]) is not None
    assert model_sites["z"]["value"] is guide_sites["z"]["value"]
    assert noise_log_prob(model_sites["z"]["fn"], model_sites["z"]["value"]) is None


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_plain_function_pair_against_pyros_elbos(objective):
    """A user's pair of plain functions (pyro.module, a Normal(...).to_event(1) guide), through
    fit's objectives with quiet statements, against Trace_ELBO / RenyiELBO(alpha=0) at the
    same seed: the loss and the gradients to float rounding."""
    from pyro.infer import RenyiELBO

    from pyrovae.bench.runners import user_pair

    vae, diag = pair()
    model, guide = user_pair(vae.decoder, diag.encoder, 3, tag="-pyro")
    x = data()
    params = list(vae.decoder.parameters()) + list(diag.encoder.parameters())
    quiet = quiet_pyro_modules(model, guide)
    with pyro.validation_enabled(False):
        if objective == "elbo":
            a = loss_and_grads(lambda: Trace_ELBO().differentiable_loss(model, guide, x=x) / len(x), params)
            with quiet:
                b = loss_and_grads(lambda: ELBO()(model, guide, {"x": x}), params)
            assert_same_bound(a, b, exact=len(list(vae.decoder.parameters())))
            return
        pyro.set_rng_seed(3)
        for p in params:
            p.grad = None
        theirs = RenyiELBO(alpha=0.0, num_particles=5, vectorize_particles=True,
                           max_plate_nesting=1).loss_and_grads(model, guide, x=x)
        with quiet:
            loss, grads = loss_and_grads(lambda: IWAE(num_particles=5)(model, guide, {"x": x}) * len(x), params)
    assert loss.item() == pytest.approx(theirs, rel=1e-5)
    for p, g in zip(params, grads):
        assert_rounding(p.grad, g, rtol=1e-4, atol=1e-5)


def test_lean_log_prob_keeps_a_validating_bernoullis_check():
    """A Bernoulli that validates its arguments still refuses a value off its support."""
    from pyrovae.infer.importance import log_prob

    fn = dist.Bernoulli(logits=torch.zeros(3, 4), validate_args=True).to_event(1)
    with pytest.raises(ValueError, match="support"):
        log_prob(fn, torch.full((3, 4), 0.5))
