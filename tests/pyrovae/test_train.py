"""fit(): learning, exact resume, plain-function pairs, non-finite losses and bad input."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import NonFiniteLossError, fit, load_run
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.infer.objectives import ELBO, MeanFieldELBO
from pyrovae.registry import spec_of
from pyrovae.training.run_folder import load_checkpoint


def small_pair(seed=0):
    torch.manual_seed(seed)
    return VAE(64, 4, (32,)), DiagNormalGuide(64, 4, (32,))


def test_short_fit_on_digits_raises_the_validation_elbo():
    model, guide = small_pair()
    result = fit(model, guide, "digits", epochs=6, batch_size=50, lr=3e-3, progress=False)
    elbos = [m["valid_elbo"] for m in result.metrics]
    assert elbos[-1] > elbos[0] + 1.0, elbos  # from the data-mean start (the default init): no plateau to climb
    assert [m["epoch"] for m in result.metrics] == list(range(1, 7))


def _params(*modules):
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


class Interrupt(MeanFieldELBO):
    """An objective that stops the process (as Ctrl-C would) at a given step: the pair's default
    objective (``meanfield`` for ``vae`` + ``diag``), so that the interrupted run trains as the
    uninterrupted one with the defaults does."""

    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def __call__(self, model, guide, batch, step=None):
        if step == self.at_step:
            raise KeyboardInterrupt
        return super().__call__(model, guide, batch, step)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    kwargs = dict(epochs=4, batch_size=100, lr=1e-3, seed=7, progress=False)
    straight = fit(*small_pair(), "digits", out_dir=tmp_path / "a", **kwargs)

    with pytest.raises(KeyboardInterrupt):  # dies in the middle of epoch 3 (12 steps per epoch), each epoch saved
        fit(*small_pair(), "digits", out_dir=tmp_path / "b", objective=Interrupt(at_step=30), checkpoint_seconds=0,
            **kwargs)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    resumed = fit(*small_pair(seed=99), "digits", out_dir=tmp_path / "b", resume=True, **kwargs)

    assert torch.equal(_params(straight.model, straight.guide), _params(resumed.model, resumed.guide))
    assert [m["train_loss"] for m in straight.metrics] == [m["train_loss"] for m in resumed.metrics]
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_checkpoint_is_weights_only_and_run_reloads(tmp_path):
    model, guide = small_pair()
    fit(model, guide, "digits", epochs=1, out_dir=tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert set(state) >= {"model", "guide", "optimizer", "rng", "epoch", "step", "metrics"}
    run = load_run(tmp_path / "r")
    assert torch.equal(_params(run.model, run.guide), _params(model, guide))
    assert run.config["model"]["name"] == "vae"
    assert run.config["model"]["options"] == dict(json.loads(json.dumps(spec_of(model)))["options"])
    assert {k: run.config["model"]["options"][k] for k in ("x_dim", "z_dim", "hidden_dims", "likelihood")} == {
        "x_dim": 64, "z_dim": 4, "hidden_dims": [32], "likelihood": "bernoulli"}


def plain_pair(x_dim=64, z_dim=3):
    decoder = torch.nn.Sequential(torch.nn.Linear(z_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, x_dim))
    encoder = torch.nn.Sequential(torch.nn.Linear(x_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, z_dim))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        scale = pyro.param("scale", torch.full((z_dim,), 0.5), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(encoder(x), scale).to_event(1))

    return model, guide, decoder


def test_plain_function_pair_fits_and_resumes(tmp_path):
    model, guide, decoder = plain_pair()
    before = decoder[0].weight.detach().clone()
    result = fit(model, guide, "digits", epochs=4, batch_size=50, lr=3e-3, progress=False, out_dir=tmp_path / "p")
    elbos = [m["valid_elbo"] for m in result.metrics]
    assert elbos[-1] > elbos[0] + 2.0
    assert not torch.equal(before, decoder[0].weight)
    scale_before = pyro.param("scale").detach().clone()
    assert not torch.allclose(scale_before, torch.full((3,), 0.5))
    checkpoint = load_checkpoint(tmp_path / "p" / "checkpoint.pt")
    assert torch.allclose(checkpoint["param_store"]["scale"], pyro.param("scale").unconstrained().detach())
    result = fit(model, guide, "digits", epochs=5, batch_size=50, lr=3e-3, progress=False,
                 out_dir=tmp_path / "p", resume=True)
    assert len(result.metrics) == 5


def test_stale_param_store_entries_do_not_stop_a_new_pair_from_training():
    model, guide, _ = plain_pair()
    fit(model, guide, "digits", epochs=1, progress=False)
    # a second pair whose modules have the same names: the store holds the old tensors
    model, guide, decoder = plain_pair()
    before = decoder[0].weight.detach().clone()
    fit(model, guide, "digits", epochs=1, progress=False)
    assert not torch.equal(before, decoder[0].weight)


def test_dict_batches_reach_model_and_guide_by_name():
    seen = {}

    class Conditional(VAE):
        def forward(self, x, y):
            seen["y"] = y.shape
            return super().forward(x)

    model, guide = Conditional(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    data = {"x": torch.bernoulli(torch.full((40, 6), 0.3)), "y": torch.arange(40) % 3}
    fit(model, guide, data, epochs=1, batch_size=20, progress=False)
    assert seen["y"] == (20,)


class NaNAt(ELBO):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def __call__(self, model, guide, batch, step=None):
        loss = super().__call__(model, guide, batch, step)
        return loss * float("nan") if step == self.at_step else loss


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path):
    model, guide = small_pair()
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 15 \(batch 3 of 12\).*after epoch 1"):
        fit(model, guide, "digits", epochs=3, objective=NaNAt(at_step=14), out_dir=tmp_path / "n", progress=False)
    checkpoint = load_checkpoint(tmp_path / "n" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=0), ValueError, "epochs must be a positive integer"),
    (dict(batch_size=2.5), ValueError, "batch_size must be a positive integer"),
    (dict(lr=-1.0), ValueError, "lr must be a positive number"),
    (dict(objective="bogus"), ValueError, "unknown objective 'bogus'"),
    (dict(resume=True), ValueError, "resume=True needs the out_dir"),
])
def test_bad_arguments_fail_early(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(*small_pair(), "digits", progress=False, **kwargs)


@pytest.mark.parametrize("data, error, match", [
    ("no-such-data", ValueError, "unknown data set"),
    (torch.full((10, 64), float("nan")), ValueError, "NaN"),
    ({"x": torch.zeros(10, 64), "y": torch.zeros(9)}, ValueError, "same number of rows"),
    ([[0.0] * 64], TypeError, "must be a tensor"),
])
def test_bad_data_fails_early_and_writes_nothing(tmp_path, data, error, match):
    with pytest.raises(error, match=match):
        fit(*small_pair(), data, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_model_that_does_not_fit_the_data_fails_before_writing(tmp_path):
    model, guide = VAE(10, 2, (8,)), DiagNormalGuide(10, 2, (8,))  # digits have 64 pixels
    with pytest.raises(RuntimeError, match="first training step failed"):
        fit(model, guide, "digits", out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    fit(*small_pair(), "digits", epochs=1, out_dir=tmp_path / "r", progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(*small_pair(), "digits", epochs=1, out_dir=tmp_path / "r", progress=False)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        fit(*small_pair(), "digits", epochs=1, out_dir=tmp_path / "empty", resume=True, progress=False)


def test_cuda_requested_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit(*small_pair(), "digits", device="cuda", progress=False)


@pytest.mark.cuda
def test_fit_and_evaluate_on_cuda(tmp_path):
    from pyrovae import log_likelihood

    model, guide = small_pair()
    result = fit(model, guide, "digits", epochs=2, device="cuda", out_dir=tmp_path / "c", progress=False)
    assert next(model.parameters()).is_cuda
    assert result.metrics[-1]["valid_elbo"] > result.metrics[0]["valid_elbo"] - 1
    est = log_likelihood(model, guide, "digits", num_samples=500, device="cuda")
    on_cpu = log_likelihood(model.cpu(), guide.cpu(), "digits", num_samples=500, device="cpu")
    # the same pair scored on each device: equal up to Monte Carlo error (paired by image)
    d = est.per_datapoint.cpu() - on_cpu.per_datapoint
    assert abs(float(d.mean())) < 4 * float(d.std()) / len(d) ** 0.5 + 1e-3
    model.cuda(), guide.cuda()
    run = load_run(tmp_path / "c", device="cuda")
    assert next(run.model.parameters()).is_cuda


def test_a_first_step_shape_error_leaves_out_pyros_table_of_shapes(tmp_path):
    """Pyro appends a table of every site's shapes to a plate's shape error: on the one line of
    the error it made a screenful (`pyrovae fit --model vrnn --guide diag --data bach-chorales`)."""
    import pyro
    import pyro.distributions as dist

    layer = torch.nn.Linear(6, 2)

    def model(x):
        pyro.module("layer", layer)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z.sum(-1, keepdim=True).expand(x.shape)).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(layer(torch.cat([x, x[:1]])), 1.0).to_event(1))  # one row too many

    x = torch.bernoulli(torch.full((20, 6), 0.3))
    with pytest.raises(RuntimeError, match="first training step failed") as error:
        fit(model, guide, x, out_dir=tmp_path / "run", progress=False)
    assert "Shape mismatch inside plate('data')" in str(error.value)
    assert "Trace Shapes" not in str(error.value) and "which --debug shows" in str(error.value)
    assert "Trace Shapes" in str(error.value.__cause__)
    assert not (tmp_path / "run").exists()
