"""The CPU step replayed from its recorded forward pass (pyrovae/training/replay.py): the same
draws, losses and parameters as the eager step at the same seed, for the suite's pairs, a
plain-function pair with a pyro.param, each objective, a spline flow (a boolean-mask index);
eager where it cannot apply, with a warning where the step cannot be recorded or replayed
faithfully."""

import re
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.distributions import constraints

from pyrovae import fit
from pyrovae.guides import DiagNormalGuide, IAFGuide, SplineFlowGuide
from pyrovae.infer.objectives import ELBO, IWAE, FreeBitsELBO, MeanFieldELBO
from pyrovae.models import VAE
from pyrovae.training import setup as fit_setup
from pyrovae.training.replay import ReplayedStep, replayable
from pyrovae.training.setup import FitOptions, Setup

X_DIM, Z_DIM = 12, 3


def data(n=65, seed=1):
    return torch.bernoulli(torch.rand(n, X_DIM, generator=torch.Generator().manual_seed(seed)))


def suite_pair(guide_name):
    torch.manual_seed(0)
    model = VAE(X_DIM, Z_DIM, (16,))
    if guide_name == "spline":  # a small box: many draws fall outside it, a selection that changes every batch
        return model, SplineFlowGuide(X_DIM, Z_DIM, (16,), bound=0.5)
    guide = IAFGuide(X_DIM, Z_DIM, (16,), num_flows=2) if guide_name == "iaf" else DiagNormalGuide(X_DIM, Z_DIM, (16,))
    return model, guide


def plain_pair(host_read=None, no_grad=False, selection=None, in_place=None, branch=None):
    """A user's pair as plain functions: pyro.module in both, and a pyro.param (the prior's scale);
    ``selection``: the guide selects the positive pixels of x (a boolean-mask index) and reads
    the selection's size in Python, as a divisor (``count``) or a shape (``shape``);
    ``in_place``: the guide's encoder changes a buffer in place on every call, batch norm's running
    statistics in train mode (``batch_norm``) or a running mean of x it centres x with (``buffer``);
    ``branch``: the guide's draw has a Python ``while`` on a tensor, a rejection loop that redraws
    the noise beyond ``branch`` standard deviations (rarely taken at 2.8: about one batch in seven),
    or (``"data"``) an ``if`` on the batch's values that goes either way."""
    torch.manual_seed(0)
    decoder, encoder = torch.nn.Linear(Z_DIM, X_DIM), torch.nn.Linear(X_DIM, 2 * Z_DIM)
    if in_place == "batch_norm":
        encoder = torch.nn.Sequential(encoder, torch.nn.BatchNorm1d(2 * Z_DIM))
    elif in_place == "buffer":
        encoder.register_buffer("x_mean", torch.zeros(X_DIM))

    def model(x):
        pyro.module("decoder", decoder)
        prior_scale = pyro.param("prior_scale", torch.ones(Z_DIM), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), prior_scale).to_event(1))
            logits = decoder(z)
            if host_read == "item":
                logits = logits * (1.0 if float(logits.mean()) < 100 else 0.5)
            elif host_read == "tolist":
                logits = logits + 0.0 * len([v for v in x[0].tolist() if v > 0])
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        if in_place == "buffer":
            encoder.x_mean.mul_(0.9).add_(0.1 * x.mean(0))
            x = x - encoder.x_mean
        with pyro.plate("data", x.shape[0]):
            loc, raw = encoder(x).split(Z_DIM, -1)
            if selection is not None:
                chosen = raw.sum(-1, keepdim=True).expand(x.shape)[x > 0]
                if selection == "count":
                    loc = loc + chosen.sum() / chosen.shape[0]
                else:
                    loc = loc + (chosen + x.new_zeros(chosen.shape[0])).mean()
            if branch == "data":
                loc = loc * (2.0 if bool(x[:, 0].sum() > x.shape[0] / 2) else 1.0)
            elif branch is not None:
                noise = torch.randn(x.shape[0], Z_DIM)
                beyond = noise.abs() > branch
                while bool(beyond.any()):
                    noise = torch.where(beyond, torch.randn_like(noise), noise)
                    beyond = noise.abs() > branch
                loc = loc + 0.1 * noise
            if no_grad:
                with torch.no_grad():
                    raw = raw * 1.0
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1))

    guide.buffers = encoder.buffers  # what the in-place tests compare
    return model, guide


def _spy_steps(monkeypatch) -> list:
    """The ReplayedSteps fit builds from now on, appended to the list returned."""
    made = []

    class Spy(ReplayedStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(fit_setup, "ReplayedStep", Spy)
    return made


def _fit(make, objective, replay, monkeypatch, epochs=2, **options):
    """Two epochs (6 full batches and a partial one each); the losses, the trained tensors, and
    the ReplayedStep fit built."""
    made = _spy_steps(monkeypatch)
    pyro.clear_param_store()
    model, guide = make()
    result = fit(model, guide, data(), objective=objective, epochs=epochs, batch_size=10, seed=3, progress=False,
                 figures=False, replay=replay, **options)
    tensors = [p.detach().clone() for m in (model, guide) if isinstance(m, torch.nn.Module) for p in m.parameters()]
    tensors += [v.detach().clone() for _, v in sorted(pyro.get_param_store().items())]
    return [row["train_loss"] for row in result.metrics], tensors, made[0]


def _assert_same(a, b):
    (losses_a, tensors_a), (losses_b, tensors_b) = a, b
    assert losses_a == pytest.approx(losses_b, rel=1e-6)
    assert len(tensors_a) == len(tensors_b) > 0
    for x, y in zip(tensors_a, tensors_b):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)


SLOW = pytest.mark.slow


@pytest.mark.parametrize("pair,objective", [
    ("diag", "elbo"), pytest.param("diag", "iwae", marks=SLOW), ("iaf", "meanfield"),
    pytest.param("iaf", "iwae", marks=SLOW), pytest.param("plain", "elbo", marks=SLOW),
    pytest.param("plain", "meanfield", marks=SLOW), ("plain", "iwae"), ("spline", "elbo"),
    pytest.param("spline", "iwae", marks=SLOW),
])
def test_replayed_fit_equals_the_eager_fit(pair, objective, monkeypatch):
    make = (lambda: plain_pair()) if pair == "plain" else (lambda: suite_pair(pair))
    *eager, eager_step = _fit(make, objective, False, monkeypatch)
    *replayed, step = _fit(make, objective, True, monkeypatch)
    assert not eager_step.enabled and eager_step.replays == 0
    # 3 eager warm-up steps, the recorded one, then replays; each epoch's partial last batch eagerly
    assert step.enabled and step.graph is not None
    assert step.replays == 14 - 2 - 4 and step.eager_steps == 2 + 3  # the 4th full batch: recorded
    # the spline flow is the identity outside its box (Pyro: outputs[outside] = inputs[outside]):
    # the recording keeps the boolean-mask index as an operation, each replay selects afresh
    assert step.data_dependent == (["a boolean-mask index"] if pair == "spline" else [])
    _assert_same(replayed, eager)


def test_the_replay_draws_the_eager_steps_noise():
    model, guide = suite_pair("diag")
    from pyrovae.training.step import LossModule, TrainStep, make_optimizer, quiet_pyro_modules

    module = LossModule(model, guide, IWAE(num_particles=3))
    train_step = TrainStep(module, make_optimizer(list(module.parameters()), 1e-3, "cpu"),
                           quiet=quiet_pyro_modules(model, guide))
    step = ReplayedStep(train_step, warmup=1)
    x = data(20)
    with pyro.validation_enabled(False):
        step({"x": x[:10]}, 0)
        step({"x": x[10:]}, 1)  # recorded and checked
        assert step.graph is not None
        torch.manual_seed(5)
        replayed = step.graph(x[:10], *step.params)[0]
        torch.manual_seed(5)
        with train_step.quiet:
            eager = module({"x": x[:10]}, 2)
        torch.manual_seed(6)
        other = step.graph(x[:10], *step.params)[0]
    assert torch.equal(replayed, eager) and not torch.equal(replayed, other)


@pytest.mark.parametrize("host_read", ["item", "tolist"])
def test_a_step_that_reads_the_host_falls_back_with_a_warning(host_read, monkeypatch):
    make = lambda: plain_pair(host_read=host_read)  # noqa: E731
    *eager, _ = _fit(make, "elbo", False, monkeypatch)
    with pytest.warns(RuntimeWarning, match="reads tensor values on the host"):
        *replayed, step = _fit(make, "elbo", True, monkeypatch)
    assert not step.enabled and step.replays == 0
    _assert_same(replayed, eager)


def test_a_branch_on_a_tensor_is_replayed_and_a_replay_that_goes_another_way_runs_eagerly(monkeypatch):
    """A rejection loop (``while bool(t)``): the recording keeps the way it went, each replay
    checks its own; where it goes another way the step runs eagerly from the same random state,
    so the run equals the eager run draw for draw."""
    make = lambda: plain_pair(branch=2.8)  # noqa: E731
    *eager, _ = _fit(make, "elbo", False, monkeypatch, epochs=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback warning
        *replayed, step = _fit(make, "elbo", True, monkeypatch, epochs=4)
    assert step.enabled and step.graph is not None and step.branches
    assert step.replays > 0 and step.missed > 0  # both ways met in 24 full batches
    # 28 steps: the recorded one, replays, and eagerly the warm-up, the partial batches, the misses
    assert step.replays + step.eager_steps + step.recordings == 28
    assert step.eager_steps == 3 + 4 + step.missed
    _assert_same(replayed, eager)


def test_a_branch_that_goes_either_way_is_recorded_again_then_switched_off(monkeypatch):
    make = lambda: plain_pair(branch="data")  # noqa: E731
    *eager, _ = _fit(make, "elbo", False, monkeypatch, epochs=8)
    with pytest.warns(RuntimeWarning, match=r"branches on tensor values in Python \(an if or while on a tensor\)"):
        *replayed, step = _fit(make, "elbo", True, monkeypatch, epochs=8)
    assert not step.enabled and step.recordings == 3
    _assert_same(replayed, eager)


def test_a_step_whose_gradients_the_recording_would_change_falls_back(monkeypatch):
    make = lambda: plain_pair(no_grad=True)  # noqa: E731
    *eager, _ = _fit(make, "elbo", False, monkeypatch)
    with pytest.warns(RuntimeWarning, match="cannot be replayed: the recorded step gives other gradients"):
        *replayed, step = _fit(make, "elbo", True, monkeypatch)
    assert not step.enabled and step.replays == 0
    _assert_same(replayed, eager)


@pytest.mark.parametrize("selection", ["count", "shape"])
def test_a_step_that_keeps_a_selections_size_falls_back_naming_the_mask(selection, monkeypatch):
    make = lambda: plain_pair(selection=selection)  # noqa: E731
    *eager, _ = _fit(make, "elbo", False, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"indexes with a data-dependent mask \(a boolean-mask index\)") as caught:
        *replayed, step = _fit(make, "elbo", True, monkeypatch)
    assert "it cannot be replayed and runs eagerly" in str(caught[-1].message)
    assert not step.enabled and step.replays == 0
    _assert_same(replayed, eager)


def _selection_run(counts, replay):
    """Steps of the plain pair whose step keeps a selection's size as a shape, one batch of 10 rows
    per entry of ``counts`` (that many positive pixels per row), warm-up 1: the losses, the
    parameters, the ReplayedStep and the replay's warnings."""
    def rows(n, ones):
        x = torch.zeros(n, X_DIM)
        x[:, :ones] = 1
        return x

    batches = [rows(10, k) for k in counts]
    pyro.clear_param_store()
    model, guide = plain_pair(selection="shape")
    torch.manual_seed(3)
    setup = Setup(model, guide, torch.cat(batches), "elbo", 10, 1e-2, 3,
                  FitOptions(replay=replay, progress=False, figures=False, valid_every=0))
    setup.step.warmup = 1
    with pyro.validation_enabled(False), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [float(setup.step({"x": x}, i)) for i, x in enumerate(batches)]
    params = [v.detach().clone() for _, v in sorted(pyro.get_param_store().items())]
    return losses, params, setup.step, [str(w.message) for w in caught if "replay" in str(w.message)]


def _assert_selection_runs_equal(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    for x, y in zip(a[1], b[1]):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)


def test_a_replay_that_meets_another_selection_size_is_recorded_again_then_switched_off():
    """Recorded and checked on batches with as many positive pixels, the recording keeps that
    count as a shape; the batch with another count runs eagerly (the same draws) and the step is
    recorded again on the next batch, checked on that one; the third recording failing its check,
    the warning names the mask and every later step runs eagerly."""
    counts = [4, 4, 5, 4, 5, 4]
    eager = _selection_run(counts, False)
    replayed = _selection_run(counts, True)
    step, [message] = replayed[2], replayed[3]
    assert "indexes with a data-dependent mask (a boolean-mask index)" in message
    assert "its check on another batch failed" in message
    # 0 eager, 1 recorded, 2 failed (eager), 3 recorded (check on 2 fails), 4 recorded (check on 3 fails:
    # the third), 5 eager
    assert step.recordings == 3 and step.replays == 0 and step.eager_steps == 3 and not step.enabled
    _assert_selection_runs_equal(replayed, eager)


def test_a_recording_that_kept_one_batchs_selection_size_is_made_again_and_replays():
    """torch views a one-element selection as a scalar when it is assigned (Pyro's spline:
    ``outputs[outside] = inputs[outside]``), so a recording made where one entry fell outside fails
    on every other count; recorded again on the next batch, the step replays (here: a recording
    that kept the count 5, checked on a batch of 4, is made again on the batches of 5)."""
    counts = [4, 5, 5, 5, 5]
    eager = _selection_run(counts, False)
    replayed = _selection_run(counts, True)
    step = replayed[2]
    assert replayed[3] == [] and step.enabled and step.recordings == 2 and step.replays == 2
    _assert_selection_runs_equal(replayed, eager)


@pytest.mark.parametrize("in_place,written", [
    ("batch_norm", "a tensor of shape () held outside its inputs"),
    ("buffer", "a tensor of shape (12,) held outside its inputs"),
    ("suite_batch_norm", "the buffer 'DiagNormalGuide.encoder.1.num_batches_tracked'"),
])
def test_a_step_that_changes_a_buffer_in_place_falls_back(in_place, written, monkeypatch):
    """The recording run is the step itself (its in-place writes happen once, as eagerly); the
    replay is refused before its check, and the run trains as --no-replay, buffers included."""
    buffers = []

    def make():
        if in_place == "suite_batch_norm":  # the suite's guide with batch norm after its encoder, train mode
            model, guide = suite_pair("diag")
            guide.encoder = torch.nn.Sequential(guide.encoder, torch.nn.BatchNorm1d(2 * Z_DIM))
        else:
            model, guide = plain_pair(in_place=in_place)
        buffers.append(list(guide.buffers()))
        return model, guide

    *eager, _ = _fit(make, "elbo", False, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"cannot be replayed: the step changes " + re.escape(written)) as caught:
        *replayed, step = _fit(make, "elbo", True, monkeypatch)
    assert "training continues eagerly" in str(caught[-1].message)
    assert not step.enabled and step.replays == 0 and step.eager_steps == 14 - 1  # the 4th full batch: recorded
    _assert_same(replayed, eager)
    eager_buffers, replayed_buffers = buffers
    assert len(replayed_buffers) == len(eager_buffers) > 0
    for a, b in zip(replayed_buffers, eager_buffers):
        assert torch.equal(a, b) if a.dtype == torch.long else torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def m2_pair():
    from pyrovae.guides.m2 import M2Guide
    from pyrovae.models.m2 import M2

    torch.manual_seed(0)
    sizes = dict(x_dim=X_DIM, num_classes=3, z_dim=Z_DIM, hidden_dims=(16,))
    return M2(**sizes), M2Guide(**sizes)


def labelled_data(n=65, seed=1):
    """Rows with labels, every third one known (-1 elsewhere), as the semi-supervised sets."""
    g = torch.Generator().manual_seed(seed)
    labelled = torch.arange(n) % 3 == 0
    y = torch.where(labelled, torch.randint(3, (n,), generator=g), torch.full((n,), -1))
    return {"x": data(n, seed), "y": y, "labelled": labelled}


def test_m2s_enumerated_elbo_is_replayed_equal_to_eager(monkeypatch):
    """M2 under the enum objective (TraceEnum_ELBO sums the label out, plus the classifier term
    on the labelled rows): replayed on a CPU, with the eager fit's losses and parameters."""
    from pyrovae.infer.enum import EnumELBO

    runs = {}
    for replay in (False, True):
        made = _spy_steps(monkeypatch)
        pyro.clear_param_store()
        model, guide = m2_pair()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback
            result = fit(model, guide, labelled_data(), objective=EnumELBO(alpha=5.0), epochs=2, batch_size=10,
                         seed=3, progress=False, figures=False, replay=replay)
        tensors = [p.detach().clone() for m in (model, guide) for p in m.parameters()]
        runs[replay] = ([row["train_loss"] for row in result.metrics], tensors), made[0]
    (eager, eager_step), (replayed, step) = runs[False], runs[True]
    assert eager_step.replays == 0
    assert step.enabled and step.graph is not None and step.replays == 14 - 2 - 4
    _assert_same(replayed, eager)


@pytest.mark.parametrize("objective", [
    ELBO(warmup_steps=20), MeanFieldELBO(warmup_steps=20, beta=0.5), IWAE(num_particles=3, warmup_steps=20),
    pytest.param(FreeBitsELBO(warmup_steps=20, free_bits=0.1), marks=SLOW),
    pytest.param(ELBO(warmup_steps=20, gradient="stl"), marks=SLOW),
])
def test_the_kl_warmups_steps_are_replayed_with_the_weight_as_an_input(objective, monkeypatch):
    """Every one of the 14 steps is inside the warm-up: the recording takes the KL weight as an
    input, so the replays (each at its own step's weight) give the eager fit's numbers."""
    make = lambda: suite_pair("diag")  # noqa: E731
    *eager, _ = _fit(make, objective, False, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the warm-up outlasts these 14 steps: said, and meant
        warnings.filterwarnings("error", "the training step", RuntimeWarning)  # no fallback
        *replayed, step = _fit(make, objective, True, monkeypatch)
    assert step.static_from == 0 and step.weight is objective
    assert step.replays == 14 - 2 - 4
    _assert_same(replayed, eager)


def test_the_enumerated_elbos_replay_waits_for_the_kl_warmup(monkeypatch):
    """TraceEnum_ELBO reads the enumerated sites' scale on the host: its warm-up runs eagerly,
    the replay starts after it."""
    from pyrovae.infer.enum import EnumELBO

    made = _spy_steps(monkeypatch)
    model, guide = m2_pair()
    fit(model, guide, labelled_data(), objective=EnumELBO(alpha=5.0, warmup_steps=5), epochs=2, batch_size=10,
        seed=3, progress=False, figures=False)
    step = made[0]
    assert step.weight is None and step.static_from == 4 and step.replays == 14 - 2 - 4 - 4


def test_a_kl_weight_frozen_into_the_recording_fails_its_check(monkeypatch):
    """Were the weight not an input (here: an objective whose weight_as_input does nothing), the
    recording would keep the recorded step's weight for every replay; the check, at the
    previous batch's own step and weight, sees it and the fit runs eagerly."""
    import contextlib

    class Frozen:
        def __init__(self, objective):
            self.kl_weight = objective.kl_weight

        def weight_as_input(self, weight):
            return contextlib.nullcontext()

    monkeypatch.setattr(fit_setup, "varying_weight", lambda objective: Frozen(objective))
    with pytest.warns(RuntimeWarning, match="another loss on other data"):
        *_, step = _fit(lambda: suite_pair("diag"), ELBO(warmup_steps=20), True, monkeypatch)
    assert not step.enabled and step.replays == 0


def test_where_the_replay_applies():
    assert replayable("cpu", False, False, "fp32", ELBO())
    assert replayable("cpu", False, False, "fp32", MeanFieldELBO())
    assert not replayable("cuda", False, False, "fp32", ELBO())
    assert not replayable("cpu", True, False, "fp32", ELBO())
    assert not replayable("cpu", False, True, "fp32", ELBO())
    assert not replayable("cpu", False, False, "bf16", ELBO())
    assert not replayable("cpu", False, False, "fp32", IWAE(num_particles=4, particle_chunk=2))
    # DReG scales the guide's gradients with a custom autograd function, which a recording below
    # autograd does not keep: refused up front (its check used to fail with a warning at every fit)
    assert not replayable("cpu", False, False, "fp32", IWAE(num_particles=4, gradient="dreg"))
    assert replayable("cpu", False, False, "fp32", IWAE(num_particles=4, gradient="stl"))

    class Mine(ELBO):  # a subclass may read the step on the host
        pass

    assert not replayable("cpu", False, False, "fp32", Mine())
    from pyrovae.infer.enum import EnumELBO
    from pyrovae.training.cuda_graph import graph_safe

    # the enumerated ELBO: replayed (the replay checks its recording against the eager step), never
    # captured in a CUDA graph (which has no such check)
    assert replayable("cpu", False, False, "fp32", EnumELBO()) and not graph_safe(EnumELBO())


def test_the_recording_drops_what_nothing_reads_but_keeps_every_draw():
    from torch.fx.experimental.proxy_tensor import make_fx

    from pyrovae.training.replay import _prune

    def forward(x, w):
        torch.arange(x.shape[0])  # a plate's index range, unread
        x.detach()
        torch.randn(3)  # an unread draw: it still moves the random stream
        return (x * w + torch.randn(x.shape)).sum()

    x, w = torch.ones(4), torch.full((4,), 2.0, requires_grad=True)
    graph = make_fx(forward)(x, w)
    assert _prune(graph) > 0
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
    assert "aten.arange.default" not in targets and "aten.detach.default" not in targets
    assert targets.count("aten.randn.default") == 2
    torch.manual_seed(1)
    replayed = graph(x, w)
    torch.manual_seed(1)
    assert torch.equal(replayed, forward(x, w))


def test_the_check_compares_a_diverged_step_instead_of_failing():
    from pyrovae.training.replay import _close

    nan, inf = float("nan"), float("inf")
    assert _close(torch.tensor([nan, 1.0]), torch.tensor([nan, 1.0 + 1e-7]))
    assert _close(torch.tensor([inf, -inf, 2.0]), torch.tensor([inf, -inf, 2.0]))
    assert not _close(torch.tensor([nan, 1.0]), torch.tensor([0.0, 1.0]))
    assert not _close(torch.tensor([inf, 1.0]), torch.tensor([-inf, 1.0]))
    assert not _close(torch.tensor([nan, 1.0]), torch.tensor([nan, 1.1]))
