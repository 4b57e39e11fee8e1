"""The best validation weights (keep_best) and early stopping (patience): what fit returns, what
the run folder keeps, what load_run reads, and resume across both."""

import json

import pytest
import torch

from pyrovae import fit
from pyrovae.errors import UsageError
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.training.checkpoint import load_checkpoint
from pyrovae.training.run_folder import load_run

G = torch.Generator().manual_seed(0)
TRAIN = torch.bernoulli(torch.full((40, 6), 0.8), generator=G)
# validation rows unlike the training rows: the better the pair fits these, the worse the ELBO there
VALID = {"x": torch.bernoulli(torch.full((50, 6), 0.3), generator=G)}
EPOCHS = 8


def pair():
    return VAE(6, 2, (16,)), DiagNormalGuide(6, 2, (16,))


def run(out=None, epochs=EPOCHS, **kwargs):
    return fit(*pair(), TRAIN, epochs=epochs, batch_size=10, lr=0.02, seed=3, valid_data=VALID, out_dir=out,
               progress=False, figures=False, **kwargs)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def assert_same(a, b):
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def figures(metrics):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in metrics]


def best_of(metrics):
    return max(metrics, key=lambda r: r["valid_elbo"])["epoch"]


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """The run with the defaults (keep_best) and its twin without: they train alike."""
    folder = tmp_path_factory.mktemp("kept") / "run"
    result = run(folder)
    last = run(keep_best=False)
    return folder, result, last


def test_fit_returns_the_weights_of_the_best_validation_elbo(kept):
    folder, result, last = kept
    best = best_of(result.metrics)
    assert 1 <= best < EPOCHS  # the case under test: the last epoch is not the best
    assert result.best == {"epoch": best, "valid_elbo": max(r["valid_elbo"] for r in result.metrics)}
    assert result.weights_epoch == best and not result.stopped_early
    assert [r["valid_elbo"] for r in result.metrics] == [r["valid_elbo"] for r in last.metrics]  # keeping costs no draw
    assert last.weights_epoch == EPOCHS
    assert_same(params(result.model), params(run(epochs=best, keep_best=False).model))  # epoch `best` as it was


def test_the_checkpoint_keeps_the_last_weights_for_resume_and_load_run_reads_either(kept):
    folder, result, last = kept
    checkpoint = load_checkpoint(folder / "checkpoint.pt")
    assert checkpoint["epoch"] == EPOCHS and checkpoint["best"]["epoch"] == result.weights_epoch
    assert_same([checkpoint["model"][k] for k, _ in last.model.named_parameters()], params(last.model))
    assert json.loads((folder / "run.json").read_text())["best"] == result.best
    best_run, last_run = load_run(folder), load_run(folder, weights="last")
    assert best_run.weights_epoch == result.weights_epoch and last_run.weights_epoch == EPOCHS
    assert_same(params(best_run.model) + params(best_run.guide), params(result.model) + params(result.guide))
    assert_same(params(last_run.model) + params(last_run.guide), params(last.model) + params(last.guide))
    assert "weights of epoch" in repr(best_run)
    with pytest.raises(ValueError, match="'best' or 'last'"):
        load_run(folder, weights="first")


def test_patience_stops_records_why_and_resume_needs_a_larger_one(tmp_path, kept):
    _, full, _ = kept
    best = best_of(full.metrics)
    stopped = run(tmp_path / "p", patience=2)
    assert stopped.stopped_early and len(stopped.metrics) == best + 2
    assert stopped.weights_epoch == best
    segment = json.loads((tmp_path / "p" / "run.json").read_text())["segments"][-1]
    assert segment["stopped_early"] == {"epoch": best + 2, "best_epoch": best,
                                        "best_valid_elbo": stopped.best["valid_elbo"], "patience": 2}
    assert load_run(tmp_path / "p").finished
    ran_out = r"patience \(2\) has run out, .* in the 2 validations to epoch .*--patience N\), or 0"
    with pytest.raises(UsageError, match=ran_out):
        run(tmp_path / "p", resume=True, patience=2)
    # trained on without patience: exactly the run never stopped, its best weights and its last
    resumed = run(tmp_path / "p", resume=True)
    assert figures(resumed.metrics) == figures(full.metrics)
    assert resumed.best == full.best and resumed.weights_epoch == full.weights_epoch
    assert_same(params(resumed.model), params(full.model))
    names = [k for k, _ in full.model.named_parameters()]
    assert_same([load_checkpoint(tmp_path / "p" / "checkpoint.pt")["model"][k] for k in names],
                [load_checkpoint(kept[0] / "checkpoint.pt")["model"][k] for k in names])


def test_a_resume_after_the_best_epoch_still_returns_it(tmp_path, kept):
    _, full, _ = kept
    best = best_of(full.metrics)
    run(tmp_path / "r", epochs=best + 1)  # its checkpoint holds the best epoch's weights beside the last
    resumed = run(tmp_path / "r", resume=True)
    assert resumed.weights_epoch == best
    assert_same(params(resumed.model) + params(resumed.guide), params(full.model) + params(full.guide))


def test_without_validation_the_last_weights_are_the_result():
    result = run(valid_every=0)
    assert result.best is None and result.weights_epoch == EPOCHS and not result.stopped_early
    with pytest.raises(UsageError, match="patience must be a non-negative integer"):
        run(patience=-1)


def test_patience_waits_for_the_end_of_the_kl_warmup(monkeypatch, tmp_path):
    """Inside a KL warm-up the bound trained is not the one validated, and the validation ELBO may
    fall while the KL weight rises: those validations count for the best weights, not against the
    patience. A validation ELBO that falls every epoch (4 steps an epoch: 40 rows, batch 10): with
    patience 2 the plain run stops at epoch 3; with a warm-up over 9 steps, epochs 1 and 2 end
    inside it, so it stops at epoch 4."""
    import importlib

    from pyrovae.infer.objectives import ELBO

    fit_module = importlib.import_module("pyrovae.training.fit")  # the module (the package exports the function)

    def falling():
        values = iter(range(100))
        return lambda *args, **kwargs: -float(next(values))

    monkeypatch.setattr(fit_module, "mean_elbo", falling())
    plain = run(patience=2)
    monkeypatch.setattr(fit_module, "mean_elbo", falling())
    warmed = run(tmp_path / "w", patience=2, objective=ELBO(warmup_steps=9))
    assert [r["step"] for r in warmed.metrics] == [4, 8, 12, 16]
    assert plain.stopped_early and plain.metrics[-1]["epoch"] == 3 and plain.best["epoch"] == 1
    assert warmed.stopped_early and warmed.metrics[-1]["epoch"] == 4 and warmed.best["epoch"] == 1
    # resumed, the validations inside the warm-up are not counted either: 2 since the best, not 3
    with pytest.raises(UsageError, match=r"in the 2 validations to epoch 4"):
        run(tmp_path / "w", resume=True, patience=2, objective=ELBO(warmup_steps=9))
    run(tmp_path / "w", resume=True, patience=3, objective=ELBO(warmup_steps=9), epochs=5)  # 2 < 3: it trains on
